package wrapper

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// The default heartbeat is 60% of the TTL; moves and NOTICE lines count in
// beats of the heartbeat, at most a third of the TTL, so the default's
// longer heartbeat does not slow them down.
func TestConfig_HeartbeatDefaultAndBeat(t *testing.T) {
	for _, c := range []struct {
		ttl, heartbeat, wantHeartbeat, wantBeat time.Duration
	}{
		{0, 0, 6 * time.Second, 10 * time.Second / 3},
		{20 * time.Second, 0, 12 * time.Second, 20 * time.Second / 3},
		{10 * time.Second, time.Second, time.Second, time.Second},                  // ianitor's ttl/10
		{10 * time.Second, 5 * time.Second, 5 * time.Second, 10 * time.Second / 3}, // longer than a third
	} {
		cfg, err := Config{Name: "web", Command: []string{"web"}, TTL: c.ttl, Heartbeat: c.heartbeat}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Heartbeat != c.wantHeartbeat || cfg.beat() != c.wantBeat {
			t.Errorf("ttl %s heartbeat %s: heartbeat %s, beat %s; want %s, %s", c.ttl, c.heartbeat, cfg.Heartbeat, cfg.beat(), c.wantHeartbeat, c.wantBeat)
		}
	}
}

// The heartbeat comes as configured after an update an agent answered in
// milliseconds, at a third of the TTL at most after a registration, and
// sooner after a slow answer, with twice its time to spare.
func TestNextBeat(t *testing.T) {
	cfg, err := Config{Name: "web", Command: []string{"web"}, TTL: 10 * time.Second}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	short := cfg
	short.Heartbeat = time.Second
	shorter := cfg
	shorter.Heartbeat = 900 * time.Millisecond
	oneSecond, err := Config{Name: "web", Command: []string{"web"}, TTL: time.Second}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		cfg   Config
		took  time.Duration
		fresh bool
		want  time.Duration
	}{
		{"idle agent", cfg, 3 * time.Millisecond, false, 6 * time.Second},
		{"after a registration", cfg, 3 * time.Millisecond, true, 10 * time.Second / 3},
		{"a short heartbeat after a registration", short, 3 * time.Millisecond, true, time.Second},
		{"answered in 1.5 s", cfg, 1500 * time.Millisecond, false, 6 * time.Second},
		{"answered in 2.5 s", cfg, 2500 * time.Millisecond, false, 4 * time.Second},
		{"a registration answered in 2.5 s", cfg, 2500 * time.Millisecond, true, 10 * time.Second / 3},
		{"answered in 4 s", cfg, 4 * time.Second, false, time.Second},
		{"answered after the TTL", cfg, 12 * time.Second, false, time.Second},
		{"a short heartbeat, answered in 4 s", short, 4 * time.Second, false, time.Second},
		{"a heartbeat under a tenth of the TTL, answered in 4.1 s", shorter, 4100 * time.Millisecond, false, 900 * time.Millisecond},
		{"a 1 s TTL, idle agent", oneSecond, 3 * time.Millisecond, false, 600 * time.Millisecond},
		{"a 1 s TTL, answered in 300 ms", oneSecond, 300 * time.Millisecond, false, 300 * time.Millisecond},
	} {
		got := tc.cfg.nextBeat(tc.took, tc.fresh)
		assert.Equal(t, tc.want, got, tc.name)
		assert.LessOrEqual(t, got, tc.cfg.Heartbeat, "%s: never later than configured", tc.name)
	}
}

// A heartbeat goes at the last half second of the wall clock before it is
// due, never after; a short heartbeat gets a tenth of itself as the slot;
// one already due (the last answer came late) goes at once.
func TestUntilBeat(t *testing.T) {
	base := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		now   time.Duration // after base
		due   time.Duration // after now
		every time.Duration
		want  time.Duration
	}{
		{0, 6 * time.Second, 6 * time.Second, 6 * time.Second},                                          // due on a boundary: on time
		{100 * time.Millisecond, 6 * time.Second, 6 * time.Second, 5900 * time.Millisecond},             // 12:00:06.1 → 12:00:06.0
		{499 * time.Millisecond, 6 * time.Second, 6 * time.Second, 5501 * time.Millisecond},             // the most it is early: a slot
		{700 * time.Millisecond, 6 * time.Second, 6 * time.Second, 5800 * time.Millisecond},             // 12:00:06.7 → 12:00:06.5
		{30 * time.Millisecond, 600 * time.Millisecond, 600 * time.Millisecond, 570 * time.Millisecond}, // slot 60 ms: 0.63 → 0.6
		{0, 5 * time.Nanosecond, 5 * time.Nanosecond, 5 * time.Nanosecond},                              // no slot at all
		{100 * time.Millisecond, 4 * time.Second, 6 * time.Second, 3900 * time.Millisecond},             // sent 2 s before its answer
		{0, -time.Second, 6 * time.Second, 0},                                                           // answered after the heartbeat: at once
	} {
		now := base.Add(tc.now)
		got := untilBeat(now, now.Add(tc.due), tc.every)
		assert.Equal(t, tc.want, got, "now +%s, due in %s, every %s", tc.now, tc.due, tc.every)
		assert.LessOrEqual(t, got, max(tc.due, 0), "never late")
		if tc.due > 0 {
			assert.Greater(t, got, tc.due-min(beatSlot, tc.every/10)-1, "never early by more than a slot")
		}
	}
}
