package check

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// describe says in a few constant words why a connection or request failed,
// for a check's output. The words depend only on the kind of failure, never
// on the error's text, which holds ephemeral ports, addresses and timings
// that change from one run to the next: an output that changed on every run
// would be written to Consul's servers on every run. Kinds are told apart by
// type (errors.Is and errors.As), not by message.
func describe(err error, timeout time.Duration) string {
	var (
		dnsErr   *net.DNSError
		unknown  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		invalid  x509.CertificateInvalidError
		header   tls.RecordHeaderError
		alert    tls.AlertError
		verify   *tls.CertificateVerificationError
		errno    syscall.Errno
		netError net.Error
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &netError) && netError.Timeout():
		return "timeout after " + timeout.String()
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed without an answer"
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return "no such host"
		}
		return "cannot resolve host"
	case errors.As(err, &unknown):
		return "certificate signed by an unknown authority"
	case errors.As(err, &hostErr):
		return "certificate not valid for the host"
	case errors.As(err, &invalid):
		if invalid.Reason == x509.Expired {
			return "certificate expired or not yet valid"
		}
		return "certificate invalid"
	case errors.As(err, &verify):
		return "certificate not verified"
	case errors.As(err, &header):
		return "not a TLS server"
	case errors.As(err, &alert):
		return "TLS handshake refused"
	case errors.As(err, &errno):
		return errno.Error() // "no route to host", "network is unreachable"...
	default:
		return "failed"
	}
}
