package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// SSO signs people in to the web console with the issuer's authorization-code flow and
// PKCE (S256): the browser is sent to the issuer with a state, a nonce and a code
// challenge, comes back with a code, which is exchanged with the verifier. The ID token
// must carry the nonce; roles come from the access token under the API's own rules
// (OIDC.Verify, MapRoles), else from the ID token.
type SSO struct {
	oauth oauth2.Config
	ids   *oidc.IDTokenVerifier
	api   *OIDC
}

// SSOState is what a sign-in must bring back: kept by the browser (in an HttpOnly
// cookie) between Start and Finish, and compared there.
type SSOState struct {
	State    string `json:"s"`
	Verifier string `json:"v"`
	Nonce    string `json:"n"`
	Next     string `json:"x"`
}

// NewSSO discovers the issuer's endpoints; clientSecret is empty for a public client.
func NewSSO(ctx context.Context, api *OIDC, issuerURL, clientID, clientSecret string) (*SSO, error) {
	p, err := oidc.NewProvider(oidc.ClientContext(context.WithoutCancel(ctx), nil), issuerURL)
	if err != nil {
		return nil, fmt.Errorf("OIDC discovery at %s: %w", issuerURL, err)
	}
	return &SSO{
		oauth: oauth2.Config{ClientID: clientID, ClientSecret: clientSecret, Endpoint: p.Endpoint(),
			Scopes: []string{oidc.ScopeOpenID, "profile", "email"}},
		ids: p.Verifier(&oidc.Config{ClientID: clientID, SupportedSigningAlgs: signingAlgs}),
		api: api,
	}, nil
}

func random() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Start returns the issuer's authorization URL and the state to keep until Finish.
func (s *SSO) Start(redirectURL, next string) (string, SSOState) {
	st := SSOState{State: random(), Verifier: oauth2.GenerateVerifier(), Nonce: random(), Next: next}
	cfg := s.oauth
	cfg.RedirectURL = redirectURL
	return cfg.AuthCodeURL(st.State, oauth2.S256ChallengeOption(st.Verifier), oidc.Nonce(st.Nonce)), st
}

// Finish exchanges the code (with the PKCE verifier) and returns the signed-in identity.
func (s *SSO) Finish(ctx context.Context, redirectURL, code string, st SSOState) (*Identity, error) {
	cfg := s.oauth
	cfg.RedirectURL = redirectURL
	tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(st.Verifier))
	if err != nil {
		return nil, fmt.Errorf("exchange the code: %w", err)
	}
	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		return nil, fmt.Errorf("the issuer sent no ID token")
	}
	idt, err := s.ids.Verify(ctx, rawID)
	if err != nil {
		return nil, fmt.Errorf("ID token: %w", err)
	}
	if idt.Nonce != st.Nonce {
		return nil, fmt.Errorf("ID token: nonce does not match this sign-in")
	}
	var rc rawClaims
	if err := idt.Claims(&rc); err != nil {
		return nil, fmt.Errorf("ID token claims: %w", err)
	}
	roles := append([]string{}, rc.RealmAccess.Roles...)
	if ra, ok := rc.ResourceAccess[s.api.cfg.Audience]; ok {
		roles = append(roles, ra.Roles...)
	}
	if c, err := s.api.Verify(ctx, tok.AccessToken); err == nil && c.Subject == idt.Subject {
		roles = c.Roles
	}
	id := &Identity{Kind: KindOIDC, Name: idt.Subject, Email: rc.Email, FullName: rc.Name, Roles: s.api.MapRoles(roles), FromCookie: true}
	if !id.Has(Viewer) {
		return nil, forbidden("Your account has no viewer, editor or admin role here")
	}
	return id, nil
}
