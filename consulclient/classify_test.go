package consulclient

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
)

// The api client reports some statuses only as text; this pins the text
// statusCode reads, and the kinds of TLS failure isTLS knows.
func TestClassify(t *testing.T) {
	assert.Equal(t, 403, statusCode(api.StatusError{Code: 403, Body: "ACL not found"}))
	assert.Equal(t, 403, statusCode(errors.New("Unexpected response code: 403 (ACL not found)")))
	assert.Equal(t, 404, statusCode(fmt.Errorf("wrapped: %w", errors.New("Unexpected response code: 404"))))
	assert.Equal(t, 0, statusCode(errors.New("dial tcp 127.0.0.1:1: connect: connection refused")))

	// A handshake the agent broke off: crypto/tls reports the alert it
	// received as a net.OpError "remote error", which net/http wraps.
	alert := &url.Error{Op: "Put", URL: "https://127.0.0.1:8501", Err: fmt.Errorf("readLoopPeekFailLocked: %w",
		&net.OpError{Op: "remote error", Err: errors.New("tls: certificate required")})}
	assert.True(t, isTLS(alert))
	assert.False(t, isRefusal(alert), "a TLS rejection is not a refusal, though net/http saw it first in its read loop")

	unknownCA := &url.Error{Op: "Put", URL: "https://127.0.0.1:8501", Err: x509.UnknownAuthorityError{}}
	assert.True(t, isTLS(unknownCA))

	plainToTLS := errors.New("Unexpected response code: 400 (Client sent an HTTP request to an HTTPS server.)")
	assert.True(t, isTLS(plainToTLS), "plain HTTP to the agent's HTTPS port")

	reset := &url.Error{Op: "Put", URL: "http://127.0.0.1:8500", Err: fmt.Errorf("readLoopPeekFailLocked: %w", errors.New("EOF"))}
	assert.False(t, isTLS(reset))
	assert.True(t, isRefusal(reset), "the connection limiter's 429 is seen as a dropped connection")
}
