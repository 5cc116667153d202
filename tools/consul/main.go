// Command consul is the real Consul agent, built from the Go module proxy so
// that svcwrap's tests and demo run against the genuine article without a
// Debian package or a downloaded binary. It lives in its own module so that
// svcwrap's go.mod never pulls in Consul's server code.
package main

import (
	"os"

	"github.com/hashicorp/consul/command/agent"
	"github.com/hashicorp/consul/command/cli"
	mcli "github.com/mitchellh/cli"
)

func main() {
	ui := &cli.BasicUI{BasicUi: mcli.BasicUi{Writer: os.Stdout, ErrorWriter: os.Stderr}}
	os.Exit(agent.New(ui).Run(os.Args[1:]))
}
