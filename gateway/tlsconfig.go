package gateway

import (
	"crypto/tls"

	llibtls "github.com/lesismal/llib/std/crypto/tls"
)

// llibTLSConfig converts the standard TLS config to the fork of crypto/tls
// (github.com/lesismal/llib) that nbio's non-blocking TLS runs on. The fork
// has its own types, so only the server-side fields that carry over are
// converted (see Config.TLSConfig). As with crypto/tls, servers default to
// TLS 1.2 as the minimum version (the fork itself would allow 1.0).
func llibTLSConfig(c *tls.Config) *llibtls.Config {
	lc := &llibtls.Config{
		Certificates:           make([]llibtls.Certificate, len(c.Certificates)),
		Rand:                   c.Rand,
		Time:                   c.Time,
		MinVersion:             c.MinVersion,
		MaxVersion:             c.MaxVersion,
		NextProtos:             []string{"http/1.1"}, // WebSocket runs over HTTP/1.1 only
		CipherSuites:           c.CipherSuites,
		ClientAuth:             llibtls.ClientAuthType(c.ClientAuth),
		ClientCAs:              c.ClientCAs,
		VerifyPeerCertificate:  c.VerifyPeerCertificate,
		SessionTicketsDisabled: c.SessionTicketsDisabled,
		KeyLogWriter:           c.KeyLogWriter,
	}
	if lc.MinVersion == 0 {
		lc.MinVersion = tls.VersionTLS12
	}
	for i := range c.Certificates {
		lc.Certificates[i] = llibCert(&c.Certificates[i])
	}
	for _, id := range c.CurvePreferences {
		switch id {
		case tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521:
			lc.CurvePreferences = append(lc.CurvePreferences, llibtls.CurveID(id))
		}
		// Curves the fork does not implement (the post-quantum hybrids) are skipped.
	}
	if get := c.GetCertificate; get != nil {
		lc.GetCertificate = func(hi *llibtls.ClientHelloInfo) (*llibtls.Certificate, error) {
			cert, err := get(stdHello(hi))
			if err != nil || cert == nil {
				return nil, err
			}
			lcert := llibCert(cert)
			return &lcert, nil
		}
	}
	return lc
}

func llibCert(c *tls.Certificate) llibtls.Certificate {
	lc := llibtls.Certificate{
		Certificate:                 c.Certificate,
		PrivateKey:                  c.PrivateKey,
		OCSPStaple:                  c.OCSPStaple,
		SignedCertificateTimestamps: c.SignedCertificateTimestamps,
		Leaf:                        c.Leaf,
	}
	for _, s := range c.SupportedSignatureAlgorithms {
		lc.SupportedSignatureAlgorithms = append(lc.SupportedSignatureAlgorithms, llibtls.SignatureScheme(s))
	}
	return lc
}

// stdHello converts the fork's ClientHelloInfo for a crypto/tls
// GetCertificate callback.
func stdHello(hi *llibtls.ClientHelloInfo) *tls.ClientHelloInfo {
	h := &tls.ClientHelloInfo{
		CipherSuites:      hi.CipherSuites,
		ServerName:        hi.ServerName,
		SupportedPoints:   hi.SupportedPoints,
		SupportedProtos:   hi.SupportedProtos,
		SupportedVersions: hi.SupportedVersions,
		Conn:              hi.Conn,
	}
	for _, id := range hi.SupportedCurves {
		h.SupportedCurves = append(h.SupportedCurves, tls.CurveID(id))
	}
	for _, s := range hi.SignatureSchemes {
		h.SignatureSchemes = append(h.SignatureSchemes, tls.SignatureScheme(s))
	}
	return h
}
