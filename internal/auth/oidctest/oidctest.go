// Package oidctest runs a real OpenID Connect issuer for tests: discovery document,
// JWKS with RSA keys generated in the test, key rotation, and token minting.
package oidctest

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer is a running test issuer.
type Issuer struct {
	URL string
	mu  sync.Mutex
	key *rsa.PrivateKey
	kid string
	n   int
	// JWKSHits counts JWKS fetches (to show caching).
	JWKSHits int
}

// New starts an issuer with one signing key.
func New(t testing.TB) *Issuer {
	is := &Issuer{}
	is.Rotate()
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	is.URL = srv.URL
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": is.URL, "jwks_uri": is.URL + "/jwks", "id_token_signing_alg_values_supported": []string{"RS256"},
			"authorization_endpoint": is.URL + "/auth", "token_endpoint": is.URL + "/token",
		})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		defer is.mu.Unlock()
		is.JWKSHits++
		set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &is.key.PublicKey, KeyID: is.kid, Algorithm: "RS256", Use: "sig"}}}
		_ = json.NewEncoder(w).Encode(set)
	})
	return is
}

// Rotate replaces the signing key; the old key is no longer published.
func (is *Issuer) Rotate() {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.n++
	is.key, is.kid = k, fmt.Sprintf("key-%d", is.n)
}

// Claims for a minted token; zero Expiry means one hour from now.
type Claims struct {
	Subject         string
	Audience        string
	Azp             string
	Email, Name     string
	RealmRoles      []string
	ClientRoles     map[string][]string
	Expiry          time.Time
	Issuer          string // defaults to the issuer's URL
	SignWithForeign bool   // sign with a key the issuer never published
}

// Token mints a signed JWT.
func (is *Issuer) Token(c Claims) string {
	is.mu.Lock()
	key, kid := is.key, is.kid
	is.mu.Unlock()
	if c.SignWithForeign {
		k, _ := rsa.GenerateKey(rand.Reader, 2048)
		key, kid = k, "foreign"
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		panic(err)
	}
	if c.Expiry.IsZero() {
		c.Expiry = time.Now().Add(time.Hour)
	}
	if c.Issuer == "" {
		c.Issuer = is.URL
	}
	std := jwt.Claims{Subject: c.Subject, Issuer: c.Issuer, Audience: jwt.Audience{c.Audience}, Expiry: jwt.NewNumericDate(c.Expiry),
		IssuedAt: jwt.NewNumericDate(time.Now().Add(-time.Minute))}
	extra := map[string]any{}
	if c.Azp != "" {
		extra["azp"] = c.Azp
	}
	if c.Email != "" {
		extra["email"] = c.Email
	}
	if c.Name != "" {
		extra["name"] = c.Name
	}
	if len(c.RealmRoles) > 0 {
		extra["realm_access"] = map[string]any{"roles": c.RealmRoles}
	}
	if len(c.ClientRoles) > 0 {
		ra := map[string]any{}
		for client, roles := range c.ClientRoles {
			ra[client] = map[string]any{"roles": roles}
		}
		extra["resource_access"] = ra
	}
	raw, err := jwt.Signed(sig).Claims(std).Claims(extra).Serialize()
	if err != nil {
		panic(err)
	}
	return raw
}
