package main

import "fmt"

// checkFlags checks --fail-after and --pass-after: wrapper.Config reads zero
// as one, so only here is a count below one a mistake. Config.Validate
// checks --check and --grace.
func (o *options) checkFlags() error {
	if o.failAfter < 1 {
		return fmt.Errorf("--fail-after %d: want at least 1", o.failAfter)
	}
	if o.passAfter < 1 {
		return fmt.Errorf("--pass-after %d: want at least 1", o.passAfter)
	}
	return nil
}
