package consulclient

import (
	"bytes"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// The hand-written heartbeat is for a local agent spoken to in plain HTTP with
// nothing added to the request; every other agent gets the api client's, so
// that TLS, a proxy, basic auth, a namespace or a partition apply as before.
// New sends nothing, so the addresses need no agent.
func TestBeater_OnlyForPlainLocalAgents(t *testing.T) {
	for _, tc := range []struct {
		addr string
		env  map[string]string
		hand bool
	}{
		{addr: "127.0.0.1:8500", hand: true},
		{addr: "http://127.0.0.2:18500", hand: true},
		{addr: "[::1]:8500", hand: true},
		{addr: "localhost:8500", hand: true},
		{addr: "unix:///run/consul/http.sock", hand: true},
		{addr: "", env: map[string]string{"CONSUL_HTTP_ADDR": "127.0.0.1:18500"}, hand: true},
		{addr: "", env: map[string]string{"CONSUL_HTTP_ADDR": "unix:///run/consul.sock"}, hand: true},
		{addr: "https://127.0.0.1:8501"},
		{addr: "127.0.0.1:8500", env: map[string]string{"CONSUL_HTTP_SSL": "true"}},
		{addr: "unix:///run/consul.sock", env: map[string]string{"CONSUL_HTTP_SSL": "true"}},
		{addr: "10.0.0.5:8500"},
		{addr: "consul.example:8500"},
		{addr: "", env: map[string]string{"CONSUL_HTTP_ADDR": "127.0.0.1:85x0"}},
		{addr: "127.0.0.1:8500", env: map[string]string{"CONSUL_HTTP_AUTH": "user:pass"}},
		{addr: "127.0.0.1:8500", env: map[string]string{"CONSUL_NAMESPACE": "team"}},
		{addr: "127.0.0.1:8500", env: map[string]string{"CONSUL_PARTITION": "part"}},
	} {
		name := tc.addr
		for k, v := range tc.env {
			name += " " + k + "=" + v
		}
		t.Run(name, func(t *testing.T) {
			for _, k := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL", "CONSUL_HTTP_AUTH", "CONSUL_NAMESPACE", "CONSUL_PARTITION"} {
				t.Setenv(k, tc.env[k])
			}
			var addrs []string
			if tc.addr != "" {
				addrs = []string{tc.addr}
			}
			c, err := New(Config{Addrs: addrs})
			require.NoError(t, err)
			assert.Equal(t, tc.hand, c.agents[0].beat != nil)
		})
	}
}

func TestBeater_Request(t *testing.T) {
	b := &beater{host: "127.0.0.1:8500"}
	require.NoError(t, b.request("/v1/agent/check/update/service:web", "passing", `say "hi"`+"\n", "tok"))
	body := `{"Status":"passing","Output":"say \"hi\"\n"}`
	assert.Equal(t, "PUT /v1/agent/check/update/service:web HTTP/1.1\r\n"+
		"Host: 127.0.0.1:8500\r\nUser-Agent: svcwrap\r\nContent-Type: application/json\r\n"+
		"Connection: close\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\nX-Consul-Token: tok\r\n\r\n"+
		body, string(b.req))
	first := b.body
	require.NoError(t, b.request("/v1/agent/check/update/service:web", "passing", `say "hi"`+"\n", ""))
	assert.NotContains(t, string(b.req), "X-Consul-Token", "no token, no header")
	assert.Same(t, &first[0], &b.body[0], "an unchanged status and output reuse the body")
	require.NoError(t, b.request("/v1/agent/check/update/service:web", "critical", "gone", ""))
	assert.True(t, bytes.HasSuffix(b.req, []byte(`{"Status":"critical","Output":"gone"}`)))
}

// What the hand-written request cannot carry as it is, the api client is
// left to send or refuse: a status it spells differently, a token with a
// control character (which would end the header early).
func TestBeater_LeavesTheOddToTheAPIClient(t *testing.T) {
	b := &beater{network: "tcp", address: "127.0.0.1:1", host: "127.0.0.1:1"}
	for _, tc := range []struct{ status, token string }{
		{"pass", ""}, {"bogus", ""}, {"passing", "tok\r\nX-Evil: 1"}, {"passing", "tok\n"}, {"passing", "\x7f"},
	} {
		sent, err := b.update(t.Context(), "service:x", tc.status, "", tc.token)
		assert.False(t, sent, "%q %q", tc.status, tc.token)
		assert.NoError(t, err)
	}
	sent, err := b.update(t.Context(), "service:x", "passing", "", "tab\tis fine")
	assert.True(t, sent, "a tab is a header's white space")
	assert.Error(t, err, "nothing listens on 127.0.0.1:1")
}

func TestParseAnswer(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code int
		text string
		err  error
	}{
		{in: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", code: 200},
		{in: "HTTP/1.1 404 Not Found\r\nContent-Length: 14\r\n\r\nUnknown check\n", code: 404, text: "Unknown check"},
		{in: "HTTP/1.1 429 Too Many Requests\r\n\r\nYour IP is issuing too many concurrent connections, please rate limit your calls\n", code: 429,
			text: "Your IP is issuing too many concurrent connections, please rate limit your calls"},
		{in: "", err: io.EOF},
		{in: "HTTP/1.1 2", err: io.ErrUnexpectedEOF},
		{in: "SSH-2.0-OpenSSH\r\n", err: io.ErrUnexpectedEOF},
	} {
		code, text, err := parseAnswer([]byte(tc.in))
		if tc.err != nil {
			assert.ErrorIs(t, err, tc.err, "%q", tc.in)
			continue
		}
		require.NoError(t, err, "%q", tc.in)
		assert.Equal(t, tc.code, code, "%q", tc.in)
		assert.Equal(t, tc.text, text, "%q", tc.in)
	}
	_, _, err := parseAnswer([]byte("HTTP/1.1 abc\r\n"))
	assert.ErrorContains(t, err, "malformed HTTP status line")
}

// readerConn is a connection that reads r; deadlines are noted, not kept.
type readerConn struct {
	net.Conn
	r         io.Reader
	deadlines int
}

func (c *readerConn) Read(p []byte) (int, error)      { return c.r.Read(p) }
func (c *readerConn) SetReadDeadline(time.Time) error { c.deadlines++; return nil }

// An answer longer than the buffer is read to its end and cut; a reset after a
// whole answer has come (the agent closed with our request unread) leaves the
// answer; one before it is the error; a whole answer waits for the close
// only a moment (a shorter read deadline).
func TestReadAll(t *testing.T) {
	far := time.Now().Add(time.Hour)
	long := "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5000\r\n\r\n" + strings.Repeat("x", 5000)
	buf := make([]byte, beatBuffer+beatOverflow)
	conn := &readerConn{r: iotest.OneByteReader(strings.NewReader(long))}
	n, err := readAll(conn, buf, far)
	require.NoError(t, err)
	assert.Equal(t, long[:beatBuffer], string(buf[:n]))
	assert.Equal(t, 1, conn.deadlines, "cut, the answer is whole")

	whole := "HTTP/1.1 429 Too Many Requests\r\ncontent-length: 4\r\n\r\nbusy"
	conn = &readerConn{r: io.MultiReader(strings.NewReader(whole), iotest.ErrReader(syscall.ECONNRESET))}
	n, err = readAll(conn, buf, far)
	require.NoError(t, err)
	assert.Equal(t, whole, string(buf[:n]))
	assert.Equal(t, 1, conn.deadlines)

	conn = &readerConn{r: io.MultiReader(strings.NewReader(whole), iotest.ErrReader(os.ErrDeadlineExceeded))}
	n, err = readAll(conn, buf, far)
	require.NoError(t, err, "the grace ran out: the answer counts")
	assert.Equal(t, whole, string(buf[:n]))

	conn = &readerConn{r: io.MultiReader(strings.NewReader(whole[:20]), iotest.ErrReader(syscall.ECONNRESET))}
	n, err = readAll(conn, buf, far)
	assert.ErrorIs(t, err, syscall.ECONNRESET)
	assert.Equal(t, 20, n)
	assert.Equal(t, 0, conn.deadlines)

	// Without a Content-Length only the close ends an answer.
	chunked := "HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nerror\r\n0\r\n\r\n"
	conn = &readerConn{r: strings.NewReader(chunked)}
	n, err = readAll(conn, buf, far)
	require.NoError(t, err)
	assert.Equal(t, chunked, string(buf[:n]))
	assert.Equal(t, 0, conn.deadlines)
}

func TestWholeAnswer(t *testing.T) {
	assert.True(t, wholeAnswer([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), false))
	assert.True(t, wholeAnswer([]byte("HTTP/1.1 200 OK\r\nVary: x\r\nCONTENT-LENGTH:2\r\n\r\nok"), false))
	assert.False(t, wholeAnswer([]byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok"), false))
	assert.True(t, wholeAnswer([]byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok"), true), "cut at the buffer")
	assert.False(t, wholeAnswer([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"), false), "head not ended")
	assert.False(t, wholeAnswer([]byte("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"), false))
	assert.False(t, wholeAnswer([]byte("HTTP/1.1 200 OK\r\n\r\n"), false))
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		wholeAnswer([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), false)
	}), "it runs after every read of every heartbeat")
}

// BenchmarkHeartbeat is one heartbeat to a real dev agent, the hand-written
// request against the api client's (the same Client with its beater taken
// away), with their allocations: the garbage every idle wrapper makes every
// few seconds (BENCHMARKS.md, section 11).
func BenchmarkHeartbeat(b *testing.B) {
	agent := consultest.StartAgent(b)
	c, err := New(Config{Addrs: []string{agent.HTTPAddr}})
	require.NoError(b, err)
	require.NotNil(b, c.agents[0].beat)
	require.NoError(b, c.Register(b.Context(), 0, Service{ID: "bench", Name: "bench", TTL: time.Minute, Status: "passing"}))
	beat := func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := c.SetStatus(b.Context(), 0, "bench", "passing", "ok"); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("hand-written", beat)
	c.agents[0].beat = nil
	b.Run("api", beat)
}
