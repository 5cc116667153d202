package consultest

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Poll intervals: short first, so fast conditions are seen at once, then
// longer, so slow ones do not hammer the agent.
const (
	pollFirst = 5 * time.Millisecond
	pollMax   = 100 * time.Millisecond
)

// poll calls cond until it reports ok or timeout passes. It returns the last
// result. cond is always called at least once, and once more at the deadline.
func poll(timeout time.Duration, cond func() (ok bool, state string)) (bool, string) {
	deadline := time.Now().Add(timeout)
	interval := pollFirst
	for {
		ok, state := cond()
		if ok {
			return true, state
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false, state
		}
		time.Sleep(min(interval, left))
		interval = min(2*interval, pollMax)
	}
}

// Eventually polls cond until it reports ok, and fails the test if that has
// not happened within timeout. what says what was awaited; the failure
// message gives it with the state cond last reported.
func Eventually(t testing.TB, timeout time.Duration, cond func() (ok bool, state string), what string) {
	t.Helper()
	if ok, state := poll(timeout, cond); !ok {
		t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, state)
	}
}

// WaitServiceStatus waits until the agent reports the aggregated status of
// the service's checks as status (api.HealthPassing, api.HealthWarning,
// api.HealthCritical or api.HealthMaint). The service must be registered:
// an absent service is never "critical" here.
func WaitServiceStatus(t testing.TB, client *api.Client, serviceID, status string, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, func() (bool, string) {
		got, state := serviceStatus(client, serviceID)
		return got == status, state
	}, fmt.Sprintf("service %q to be %s", serviceID, status))
}

// serviceStatus returns the service's aggregated status ("" if it is not
// registered or the agent did not answer) and a description for messages.
func serviceStatus(client *api.Client, serviceID string) (string, string) {
	_, info, err := client.Agent().AgentHealthServiceByID(serviceID)
	if err != nil {
		return "", "agent error: " + err.Error()
	}
	if info == nil {
		return "", "not registered"
	}
	var checks []string
	for _, c := range info.Checks {
		checks = append(checks, fmt.Sprintf("%s=%s %q", c.CheckID, c.Status, c.Output))
	}
	sort.Strings(checks)
	return info.AggregatedStatus, fmt.Sprintf("%s (checks: %s)", info.AggregatedStatus, strings.Join(checks, ", "))
}

// WaitServicePresent waits until the service is registered with the agent.
func WaitServicePresent(t testing.TB, client *api.Client, serviceID string, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, func() (bool, string) {
		present, state := servicePresent(client, serviceID)
		return present, state
	}, fmt.Sprintf("service %q to be registered", serviceID))
}

// WaitServiceGone waits until the service is no longer registered with the agent.
func WaitServiceGone(t testing.TB, client *api.Client, serviceID string, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, func() (bool, string) {
		present, state := servicePresent(client, serviceID)
		return !present && !strings.HasPrefix(state, "agent error"), state
	}, fmt.Sprintf("service %q to be deregistered", serviceID))
}

// servicePresent reports whether the agent has the service, and the agent's
// service IDs for messages.
func servicePresent(client *api.Client, serviceID string) (bool, string) {
	services, err := client.Agent().Services()
	if err != nil {
		return false, "agent error: " + err.Error()
	}
	ids := make([]string, 0, len(services))
	for id := range services {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	_, ok := services[serviceID]
	return ok, fmt.Sprintf("agent services %v", ids)
}
