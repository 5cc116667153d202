package wrapper

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The instance mark round-trips, older three-field marks still parse, and a
// holder in another PID namespace of this host is not looked up by PID.
func TestInstance_Mark(t *testing.T) {
	self := currentInstance()
	require.NotZero(t, self.pidns, "this process's PID namespace")
	got, ok := parseInstance(self.String())
	require.True(t, ok)
	assert.Equal(t, self, got)
	assert.True(t, got.alive())

	old, ok := parseInstance(self.host + "/1/5")
	require.True(t, ok, "a mark of an svcwrap from before the namespace field")
	assert.True(t, old.visibleFrom(self))

	elsewhere := self
	elsewhere.pidns++
	assert.False(t, elsewhere.visibleFrom(self), "another PID namespace: its PID means nothing here")
	other := self
	other.host += "x"
	assert.False(t, other.visibleFrom(self))

	for _, bad := range []string{"", "h/1", "h/x/1", "h/1/x", "h/1/2/x", "h/1/2/3/4"} {
		_, ok := parseInstance(bad)
		assert.False(t, ok, bad)
	}
}
