package consultest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// TLS is a certificate authority made for one test, with a certificate for an
// agent's HTTPS API and one for its clients, all as PEM files in a temporary
// directory. Pass it to StartAgent with WithTLS; pass the files of another
// NewTLS to show the code under test a CA that did not sign the agent.
type TLS struct {
	// CAFile is the CA's certificate: what a client trusts (--ca-file,
	// CONSUL_CACERT).
	CAFile string
	// CertFile and KeyFile are a client certificate signed by the CA, and
	// its key (--client-cert, --client-key).
	CertFile, KeyFile string
	// ServerCertFile and ServerKeyFile are the agent's certificate, valid for
	// the IP addresses given to NewTLS, and its key.
	ServerCertFile, ServerKeyFile string
	// VerifyIncoming makes the agent's HTTPS API require a client
	// certificate signed by the CA. False: any client may connect.
	VerifyIncoming bool

	roots  *x509.CertPool
	client tls.Certificate
}

// NewTLS makes a CA and the certificates it signs. The agent's certificate is
// valid for 127.0.0.1 and each of ips (the loopback addresses an agent is
// bound to with WithBind), and for the name localhost.
func NewTLS(t testing.TB, ips ...string) *TLS {
	t.Helper()
	dir := t.TempDir()
	c := &TLS{
		CAFile:         filepath.Join(dir, "ca.pem"),
		CertFile:       filepath.Join(dir, "client.pem"),
		KeyFile:        filepath.Join(dir, "client-key.pem"),
		ServerCertFile: filepath.Join(dir, "server.pem"),
		ServerKeyFile:  filepath.Join(dir, "server-key.pem"),
	}
	if err := c.make(ips); err != nil {
		t.Fatalf("consultest: make TLS certificates: %v", err)
	}
	return c
}

func (c *TLS) make(ips []string) error {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "consultest CA " + strconv.FormatInt(now.UnixNano(), 36)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	if err := writePEM(c.CAFile, "CERTIFICATE", caDER); err != nil {
		return err
	}
	c.roots = x509.NewCertPool()
	c.roots.AddCert(ca)

	serverIPs := []net.IP{net.IPv4(127, 0, 0, 1)}
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("%q: not a loopback IP address", s)
		}
		serverIPs = append(serverIPs, ip)
	}
	server := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "server.dc1.consul"},
		DNSNames:     []string{"server.dc1.consul", "localhost"},
		IPAddresses:  serverIPs,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if _, err := issue(server, ca, caKey, c.ServerCertFile, c.ServerKeyFile); err != nil {
		return err
	}
	client := &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: "consultest client"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	c.client, err = issue(client, ca, caKey, c.CertFile, c.KeyFile)
	return err
}

// issue signs tmpl with the CA and writes the certificate and a new key.
func issue(tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey, certFile, keyFile string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
		return tls.Certificate{}, err
	}
	if err := writePEM(keyFile, "EC PRIVATE KEY", keyDER); err != nil {
		return tls.Certificate{}, err
	}
	return tls.LoadX509KeyPair(certFile, keyFile)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// WithTLS makes the agent serve its HTTP API over HTTPS only, with c's
// certificates, on the port HTTPAddr names (plain HTTP is off). The agent's
// Client and the wait helpers speak HTTPS, trust c's CA and present c's
// client certificate. The code under test reaches the agent at c.URL(agent).
func WithTLS(c *TLS) Option {
	return func(cfg *agentConfig) {
		cfg.portArgs = append(cfg.portArgs, func(httpPort int) []string {
			return []string{
				"-hcl", fmt.Sprintf("ports { http = -1, https = %d }", httpPort),
				"-hcl", fmt.Sprintf("tls { defaults { ca_file = %s, cert_file = %s, key_file = %s }, https { verify_incoming = %t } }",
					strconv.Quote(c.CAFile), strconv.Quote(c.ServerCertFile), strconv.Quote(c.ServerKeyFile), c.VerifyIncoming),
			}
		})
		cfg.client = append(cfg.client, func(conf *api.Config) {
			conf.Scheme = "https"
			if t, ok := conf.HttpClient.Transport.(*http.Transport); ok {
				t.TLSClientConfig = &tls.Config{
					RootCAs:      c.roots,
					Certificates: []tls.Certificate{c.client},
					MinVersion:   tls.VersionTLS12,
				}
			}
		})
	}
}

// URL is the address of an agent started WithTLS(c), with its scheme:
// "https://127.0.0.1:PORT".
func (c *TLS) URL(a *Agent) string { return "https://" + a.HTTPAddr }
