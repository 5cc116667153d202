package consultest

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// BindIP is the loopback address the agent binds to, which is its node's
// address in the catalog: the address a service registered through it
// without one of its own takes.
func (a *Agent) BindIP() string {
	host, _, err := net.SplitHostPort(a.HTTPAddr)
	if err != nil {
		panic("consultest: agent address " + a.HTTPAddr + ": " + err.Error()) // setAddrs wrote it
	}
	return host
}

// ServiceSnapshot is one answer to a query of /v1/health/service/NAME: every
// instance of the service in the catalog, with its node's and its own checks.
type ServiceSnapshot struct {
	// Index is the answer's X-Consul-Index.
	Index uint64
	// At is when the answer arrived.
	At time.Time
	// Entries are the instances, on every node, whatever their health.
	Entries []*api.ServiceEntry
}

// OnNode returns the instance of the service on node, or nil.
func (s ServiceSnapshot) OnNode(node string) *api.ServiceEntry {
	for _, e := range s.Entries {
		if e.Node != nil && e.Node.Node == node {
			return e
		}
	}
	return nil
}

// Entry is the entry of service ID id on node, or nil.
func (s ServiceSnapshot) Entry(node, id string) *api.ServiceEntry {
	for _, e := range s.Entries {
		if e.Node != nil && e.Node.Node == node && e.Service != nil && e.Service.ID == id {
			return e
		}
	}
	return nil
}

// ServiceWatch records every state of a service in the catalog that a
// blocking query sees: each change the servers apply wakes the query, so
// an entry that vanishes or a check that flips is recorded, not sampled
// past. (Two changes applied within the moment between an answer and the
// next query show as one; tests that must see every change also compare
// fields that any change moves, such as an entry's CreateIndex.)
type ServiceWatch struct {
	service string
	client  *api.Client
	cancel  context.CancelFunc
	done    chan struct{}
	stop    sync.Once

	mu      sync.Mutex
	snaps   []ServiceSnapshot
	lastErr error
}

// WatchService starts recording the service's states as client (best a
// server's, which stays up) answers them, beginning with the current one,
// which it waits for. It stops on Stop or t.Cleanup.
func WatchService(t testing.TB, client *api.Client, service string) *ServiceWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &ServiceWatch{service: service, client: client, cancel: cancel, done: make(chan struct{})}
	t.Cleanup(w.Stop)
	go w.run(ctx)
	Eventually(t, 10*time.Second, func() (bool, string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.snaps) > 0, fmt.Sprintf("last error: %v", w.lastErr)
	}, "the first answer about service "+service)
	return w
}

func (w *ServiceWatch) run(ctx context.Context) {
	defer close(w.done)
	var index uint64
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Second}).WithContext(ctx)
		entries, meta, err := w.client.Health().Service(w.service, "", false, q)
		if err != nil {
			w.mu.Lock()
			w.lastErr = err
			w.mu.Unlock()
			// A retry, bounded by ctx; the server answers again in a moment.
			select {
			case <-ctx.Done():
			case <-time.After(pollMax):
			}
			continue
		}
		w.mu.Lock()
		w.snaps = append(w.snaps, ServiceSnapshot{Index: meta.LastIndex, At: time.Now(), Entries: entries})
		w.mu.Unlock()
		// Consul's rule for blocking queries: an index that went backwards
		// (a snapshot restore) starts over.
		if meta.LastIndex < index {
			index = 0
		} else {
			index = meta.LastIndex
		}
	}
}

// Stop ends the watch and waits for its query to return. It is idempotent.
func (w *ServiceWatch) Stop() {
	w.stop.Do(func() {
		w.cancel()
		<-w.done
	})
}

// Snapshots returns what the watch has recorded so far, oldest first.
func (w *ServiceWatch) Snapshots() []ServiceSnapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.snaps)
}

// Last returns the newest snapshot recorded.
func (w *ServiceWatch) Last() ServiceSnapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.snaps[len(w.snaps)-1] // WatchService waited for the first
}

// Since returns the snapshots recorded at or after t, oldest first.
func (w *ServiceWatch) Since(t time.Time) []ServiceSnapshot {
	snaps := w.Snapshots()
	i := len(snaps)
	for i > 0 && !snaps[i-1].At.Before(t) {
		i--
	}
	return snaps[i:]
}

// CatchUp waits until the watch has recorded the state the servers hold now,
// so that a test reading Snapshots afterwards sees everything up to this
// moment.
func (w *ServiceWatch) CatchUp(t testing.TB, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, meta, err := w.client.Health().Service(w.service, "", false, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		t.Fatalf("consultest: current index of service %s: %v", w.service, err)
	}
	Eventually(t, timeout, func() (bool, string) {
		snaps := w.Snapshots()
		last := snaps[len(snaps)-1]
		return last.Index >= meta.LastIndex, fmt.Sprintf("recorded index %d of %d", last.Index, meta.LastIndex)
	}, "the watch of service "+w.service+" to catch up")
}

// CheckStatus returns the status of the check checkID on entry, "" if it has
// none.
func CheckStatus(entry *api.ServiceEntry, checkID string) string {
	for _, c := range entry.Checks {
		if c.CheckID == checkID {
			return c.Status
		}
	}
	return ""
}
