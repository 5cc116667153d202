package consultest

import (
	"crypto/rand"
	"fmt"
	"strconv"
	"testing"

	"github.com/hashicorp/consul/api"
)

// WithACL turns on the agent's ACL system with default policy deny, and
// managementToken as its initial management token (make one with NewUUID).
// The agent's Client, and the polling of the wait helpers, send that token;
// the code under test gets nothing from it, so without a token of its own it
// is the anonymous token, which may do nothing.
//
// The agent also uses managementToken as its agent token, as a real agent has
// one: its anti-entropy removes a deregistered service from the servers'
// catalog with the agent token (Consul 1.20; with none, the anonymous token
// is refused and the entry stays in the catalog for good).
//
// A -dev agent keeps its ACL state in memory: after Restart, only the
// management token exists again, and every policy and token made by
// CreatePolicy and CreateToken is gone.
func WithACL(managementToken string) Option {
	return func(c *agentConfig) {
		c.extra = append(c.extra, "-hcl", fmt.Sprintf(
			`acl { enabled = true, default_policy = "deny", tokens { initial_management = %[1]s, agent = %[1]s } }`,
			strconv.Quote(managementToken)))
		c.client = append(c.client, func(conf *api.Config) { conf.Token = managementToken })
	}
}

// NewUUID returns a random UUID, the form of Consul's tokens.
func NewUUID(t testing.TB) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("consultest: random UUID: %v", err)
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// CreatePolicy creates an ACL policy named name from rules (Consul's HCL rule
// language) with the agent's management token (WithACL).
func (a *Agent) CreatePolicy(t testing.TB, name, rules string) *api.ACLPolicy {
	t.Helper()
	p, _, err := a.Client.ACL().PolicyCreate(&api.ACLPolicy{Name: name, Rules: rules}, nil)
	if err != nil {
		t.Fatalf("consultest: create ACL policy %q on %s: %v", name, a, err)
	}
	return p
}

// CreateToken creates a token that holds the named policies, with the
// agent's management token (WithACL). The token to send is its SecretID;
// DeleteToken takes it back.
func (a *Agent) CreateToken(t testing.TB, policies ...string) *api.ACLToken {
	t.Helper()
	links := make([]*api.ACLTokenPolicyLink, 0, len(policies))
	for _, p := range policies {
		links = append(links, &api.ACLTokenPolicyLink{Name: p})
	}
	tok, _, err := a.Client.ACL().TokenCreate(&api.ACLToken{
		Description: "consultest",
		Policies:    links,
	}, nil)
	if err != nil {
		t.Fatalf("consultest: create ACL token with policies %v on %s: %v", policies, a, err)
	}
	return tok
}

// DeleteToken deletes tok: from then on the agent answers a request that
// carries it with 403 ("ACL not found").
func (a *Agent) DeleteToken(t testing.TB, tok *api.ACLToken) {
	t.Helper()
	if _, err := a.Client.ACL().TokenDelete(tok.AccessorID, nil); err != nil {
		t.Fatalf("consultest: delete ACL token %s on %s: %v", tok.AccessorID, a, err)
	}
}
