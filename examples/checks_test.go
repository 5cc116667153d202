package examples_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// assertHTTPCheck asserts that the passing check of web is the example's
// HTTP check, run against web on port.
func assertHTTPCheck(t *testing.T, agent *consultest.Agent, port int) {
	t.Helper()
	checks, err := agent.Client.Agent().Checks()
	require.NoError(t, err)
	chk, ok := checks["service:web"]
	require.True(t, ok, "no check for web")
	assert.Contains(t, chk.Output, "GET http://"+loopback(port)+"/health: 200", "the example's --check")
}
