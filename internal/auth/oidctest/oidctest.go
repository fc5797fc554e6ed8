// Package oidctest runs a real OpenID Connect issuer for tests: discovery document,
// JWKS with RSA keys generated in the test, key rotation, token minting, and the
// authorization-code flow with PKCE (sign-ins approved as SignInAs says).
package oidctest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
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

	// The authorization-code flow (SignInAs, /auth, /token).
	login  *Claims
	codes  map[string]grant
	secret string
}

// grant is an issued authorization code waiting for its exchange.
type grant struct {
	claims                     Claims
	clientID, redirect, nonce  string
	challenge, challengeMethod string
}

// SignInAs makes the issuer's /auth approve the next sign-ins as c (no login form), or
// refuse them with error=access_denied when c is nil. ClientSecret, when set, must
// come with the code exchange.
func (is *Issuer) SignInAs(c *Claims, clientSecret string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.login, is.secret = c, clientSecret
}

// authorize is the authorization endpoint: it answers at once with a code (or an
// error) at the client's redirect_uri, keeping the PKCE challenge and the nonce.
func (is *Issuer) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Scheme == "" || q.Get("response_type") != "code" || q.Get("client_id") == "" {
		http.Error(w, "bad authorization request", http.StatusBadRequest)
		return
	}
	back := redirect.Query()
	back.Set("state", q.Get("state"))
	is.mu.Lock()
	if is.login == nil {
		back.Set("error", "access_denied")
	} else {
		code := fmt.Sprintf("code-%d-%d", len(is.codes), time.Now().UnixNano())
		if is.codes == nil {
			is.codes = map[string]grant{}
		}
		is.codes[code] = grant{claims: *is.login, clientID: q.Get("client_id"), redirect: q.Get("redirect_uri"), nonce: q.Get("nonce"),
			challenge: q.Get("code_challenge"), challengeMethod: q.Get("code_challenge_method")}
		back.Set("code", code)
	}
	is.mu.Unlock()
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

// token is the token endpoint: a code is good once, with the redirect_uri it was issued
// for and the PKCE verifier of its S256 challenge.
func (is *Issuer) token(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	fail := func(msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": msg})
	}
	is.mu.Lock()
	g, ok := is.codes[r.PostForm.Get("code")]
	delete(is.codes, r.PostForm.Get("code"))
	secret := is.secret
	is.mu.Unlock()
	clientID, clientSecret, basic := r.BasicAuth()
	if !basic {
		clientID, clientSecret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	switch {
	case r.PostForm.Get("grant_type") != "authorization_code" || !ok:
		fail("unknown or used code")
	case clientID != g.clientID || secret != "" && clientSecret != secret:
		fail("client authentication failed")
	case r.PostForm.Get("redirect_uri") != g.redirect:
		fail("redirect_uri differs from the authorization request's")
	case g.challengeMethod != "S256" || base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge:
		fail("PKCE verification failed")
	default:
		access := g.claims
		id := g.claims
		id.Audience, id.Nonce = g.clientID, g.nonce
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": is.Token(access), "id_token": is.Token(id),
			"token_type": "Bearer", "expires_in": 300})
	}
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
	mux.HandleFunc("/auth", is.authorize)
	mux.HandleFunc("/token", is.token)
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
	Nonce           string // the ID token's nonce (the code flow sets it)
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
	if c.Nonce != "" {
		extra["nonce"] = c.Nonce
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
