package main

import (
	"fmt"
	"time"

	"github.com/svcwrap/svcwrap/check"
)

// checkFlags checks --check, --grace, --fail-after and --pass-after.
func (o *options) checkFlags() error {
	for _, c := range o.checks {
		if _, err := check.ParseSpec(c); err != nil {
			return fmt.Errorf("--check: %w", err)
		}
	}
	if o.grace < 0 {
		return fmt.Errorf("--grace %s: must not be negative", time.Duration(o.grace))
	}
	if o.failAfter < 1 {
		return fmt.Errorf("--fail-after %d: want at least 1", o.failAfter)
	}
	if o.passAfter < 1 {
		return fmt.Errorf("--pass-after %d: want at least 1", o.passAfter)
	}
	return nil
}
