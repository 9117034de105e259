// Package callers authenticates the proxies that call extauthz's check
// listeners. extauthz mints privileged tokens for whoever reaches those
// listeners and believes the host, method and path they say a request has,
// so who the caller is must be known before any policy runs: a listener
// serves TLS, asks for a client certificate from the operator's CA, and lets
// through only the identities (URI SANs such as SPIFFE IDs, or DNS SANs) the
// operator listed. Everything else ends in the TLS handshake, is logged once
// per connection with the peer's address and claimed identity, and counted.
// A reload that no longer trusts a connected caller refuses its next
// request (gRPC PERMISSION_DENIED, HTTP 403), so that an open connection
// keeps no right the configuration took away.
//
// An address proves nothing here: a sidecar proxy makes every mesh caller
// loopback. A certificate is the identity.
package callers

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// dnsPrefix marks an allowed identity that is a DNS SAN.
const dnsPrefix = "dns:"

// Results of a connection, the values of the metric's result label.
const (
	Accepted             = "accepted"
	NotTLS               = "not_tls"               // plaintext, or anything but a TLS ClientHello
	NoCertificate        = "no_certificate"        // a CA is configured and the caller sent no certificate
	UntrustedCertificate = "untrusted_certificate" // the certificate does not chain to the CA, or has expired
	NotAllowed           = "not_allowed"           // a trusted certificate whose identity is not on the list
	HandshakeFailed      = "handshake_failed"      // any other failure, a timeout included
)

// Results lists every result, for metrics that must show each from the start.
var Results = []string{Accepted, NotTLS, NoCertificate, UntrustedCertificate, NotAllowed, HandshakeFailed}

// Identity is one allowed caller: a URI SAN, or a DNS SAN.
type Identity struct {
	URI string // in the form url.URL.String gives
	DNS string // lower case, without a trailing dot
}

// ParseIdentity reads an allowed caller: "dns:<name>" for a DNS SAN, or an
// absolute URI (spiffe://trust-domain/ns/<ns>/sa/<sa>) for a URI SAN.
func ParseIdentity(s string) (Identity, error) {
	if name, ok := strings.CutPrefix(s, dnsPrefix); ok {
		name = strings.TrimSuffix(strings.ToLower(name), ".")
		if name == "" || strings.ContainsAny(name, " /:@") {
			return Identity{}, fmt.Errorf("%q is not dns:<name>", s)
		}
		return Identity{DNS: name}, nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Opaque == "" && u.Host == "" {
		return Identity{}, errors.New("want a URI SAN such as spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account, or dns:<name> for a DNS SAN")
	}
	return Identity{URI: u.String()}, nil
}

func (id Identity) String() string {
	if id.DNS != "" {
		return dnsPrefix + id.DNS
	}
	return id.URI
}

// Policy is who may call a listener: its TLS configuration (certificate,
// and the CA client certificates must chain to) and the identities allowed.
// It is immutable; a reload makes a new one.
type Policy struct {
	// RequireCertificate is true with a client CA: a caller without a
	// certificate from it is refused.
	RequireCertificate bool
	allowed            []Identity
	tls                *tls.Config
}

// NewPolicy returns the policy that serves cert and, when clientCAs is not
// nil, asks callers for a certificate that chains to it; with allowed, its
// identity must also be one of them. allowed needs clientCAs.
func NewPolicy(cert tls.Certificate, clientCAs *x509.CertPool, allowed []Identity) (*Policy, error) {
	if len(allowed) > 0 && clientCAs == nil {
		return nil, errors.New("allowed callers need a client CA to verify their certificates against")
	}
	p := &Policy{RequireCertificate: clientCAs != nil, allowed: slices.Clone(allowed)}
	p.tls = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if clientCAs != nil {
		// The library verifies the chain (and says so with a
		// CertificateVerificationError); VerifyConnection then asks for
		// a certificate at all and checks its identity.
		p.tls.ClientCAs, p.tls.ClientAuth = clientCAs, tls.VerifyClientCertIfGiven
		p.tls.VerifyConnection = p.verify
	}
	return p, nil
}

// recheck decides again, under p, a connection another policy let in:
// its chain must lead to p's CA and its identity be one p allows.
func (p *Policy) recheck(cs *tls.ConnectionState) error {
	if !p.RequireCertificate {
		return nil
	}
	if len(cs.PeerCertificates) == 0 {
		return &Refusal{Result: NoCertificate}
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: p.tls.ClientCAs, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return &Refusal{Result: UntrustedCertificate, Identity: Describe(leaf)}
	}
	return p.verify(*cs)
}

// config returns the TLS configuration of a listener that speaks protos (ALPN).
func (p *Policy) config(protos []string) *tls.Config {
	c := p.tls.Clone()
	c.NextProtos = protos
	return c
}

// Refusal is why a verified handshake was refused: it is what the TLS
// handshake returns from VerifyConnection.
type Refusal struct {
	Result   string // NoCertificate or NotAllowed
	Identity string // what the certificate claims, for the log
}

func (r *Refusal) Error() string {
	switch r.Result {
	case NoCertificate:
		return "the caller sent no client certificate"
	case UntrustedCertificate:
		return fmt.Sprintf("the caller's certificate does not chain to server.tls.clientCA: %s", r.Identity)
	}
	return fmt.Sprintf("the caller's identity is not among server.tls.allowedCallers: %s", r.Identity)
}

// verify runs at the end of every handshake, after the library verified
// the chain of any certificate given.
func (p *Policy) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return &Refusal{Result: NoCertificate}
	}
	leaf := cs.PeerCertificates[0]
	if len(p.allowed) == 0 || p.allows(leaf) {
		return nil
	}
	return &Refusal{Result: NotAllowed, Identity: Describe(leaf)}
}

// allows reports whether one of leaf's SANs is an allowed identity.
func (p *Policy) allows(leaf *x509.Certificate) bool {
	for _, id := range p.allowed {
		switch {
		case id.URI != "":
			for _, u := range leaf.URIs {
				if u.String() == id.URI {
					return true
				}
			}
		case id.DNS != "":
			for _, d := range leaf.DNSNames {
				if strings.TrimSuffix(strings.ToLower(d), ".") == id.DNS {
					return true
				}
			}
		}
	}
	return false
}

// Bounds on what Describe prints of a caller's certificate, which the
// caller wrote.
const (
	maxDescribedSANs  = 4
	maxDescribedBytes = 256
)

// Describe names what a certificate claims to be, for logs: its URI and DNS
// SANs (at most a few, each cut short), else its subject's common name.
func Describe(c *x509.Certificate) string {
	var names []string
	for _, u := range c.URIs {
		names = append(names, u.String())
	}
	for _, d := range c.DNSNames {
		names = append(names, dnsPrefix+d)
	}
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = append(names, "cn:"+c.Subject.CommonName)
	}
	if len(names) > maxDescribedSANs {
		names = append(names[:maxDescribedSANs], fmt.Sprintf("(%d more)", len(names)-maxDescribedSANs))
	}
	for i, n := range names {
		if len(n) > maxDescribedBytes {
			names[i] = n[:maxDescribedBytes] + "…"
		}
	}
	return strings.Join(names, ",")
}
