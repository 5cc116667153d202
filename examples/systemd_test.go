package examples_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// maxExposure is the highest `systemd-analyze security` rating a shipped
// unit may have (the unit before hardening rated 9.6, UNSAFE). The tool
// takes it times ten.
const maxExposure = "25"

// units are the systemd units examples/ ships.
func units(t *testing.T) []string {
	t.Helper()
	found, err := filepath.Glob("*.service")
	require.NoError(t, err)
	require.NotEmpty(t, found)
	return found
}

// installed is a copy of unit as it would be installed, with svcwrap where
// the unit expects it: systemd-analyze checks that ExecStart= can be run.
func installed(t *testing.T, unit string) string {
	t.Helper()
	text, err := os.ReadFile(unit)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), filepath.Base(unit))
	text = bytes.ReplaceAll(text, []byte("/usr/local/bin/svcwrap"), []byte(svcwrapBin))
	require.NoError(t, os.WriteFile(path, text, 0o644))
	return path
}

// systemd-analyze verify loads each unit as systemd would: no unknown key,
// no value it cannot parse, every command there. It reports those on
// stderr and still exits 0, so any output fails the test.
func TestSystemdUnits_Verify(t *testing.T) {
	need(t, "systemd-analyze")
	for _, unit := range units(t) {
		t.Run(unit, func(t *testing.T) {
			out, err := exec.Command("systemd-analyze", "verify", installed(t, unit)).CombinedOutput()
			assert.NoError(t, err, "systemd-analyze verify %s:\n%s", unit, out)
			assert.Empty(t, strings.TrimSpace(string(out)), "systemd-analyze verify %s has something to say", unit)
		})
	}
}

// Each unit is hardened: `systemd-analyze security` rates it at most
// maxExposure/10.
func TestSystemdUnits_Security(t *testing.T) {
	need(t, "systemd-analyze")
	for _, unit := range units(t) {
		t.Run(unit, func(t *testing.T) {
			out, err := exec.Command("systemd-analyze", "security", "--offline=yes", "--threshold="+maxExposure,
				installed(t, unit)).CombinedOutput()
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			assert.NoError(t, err, "exposure above %s/10: %s", maxExposure, lines[len(lines)-1])
		})
	}
}

// What systemd applies itself for notify and hardening, read from the unit.
func TestSystemdUnit_NotifyAndHardening(t *testing.T) {
	unit := readUnit(t, "svcwrap-web.service")
	get := func(key string) string { return unit.last("Service", key) }
	assert.Equal(t, "notify", get("Type"), "started means passing in Consul")
	assert.Equal(t, "main", get("NotifyAccess"), "only svcwrap is heard, not web")
	watchdog := systemdSeconds(t, get("WatchdogSec"))
	assert.Positive(t, watchdog)
	assert.Greater(t, systemdSeconds(t, get("TimeoutStartSec")), 30*time.Second, "longer than --grace")

	assert.True(t, get("DynamicUser") == "yes" || get("User") != "" && get("User") != "root", "a user of its own")
	for key, want := range map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"PrivateDevices": "yes", "CapabilityBoundingSet": "",
	} {
		assert.Equal(t, want, get(key), "%s=", key)
	}
	assert.Contains(t, unit.list("Service", "ReadWritePaths"), "/run/svcwrap", "the host lock is shared across units")
	assert.Contains(t, unit.list("Service", "RestrictAddressFamilies"), "AF_NETLINK", "the --port check reads the socket tables over netlink")
}
