package auth

import (
	"context"
	"fmt"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// OIDCConfig configures JWT verification against an OpenID Connect issuer.
type OIDCConfig struct {
	IssuerURL string
	Audience  string
	ClockSkew time.Duration
	// JWKSMinRefresh is the least time between two JWKS fetches for unknown key ids.
	JWKSMinRefresh time.Duration
	// Role names in the IdP that map to our roles.
	ViewerRole, EditorRole, AdminRole, PipelineRole string
}

// OIDC verifies JWTs with the issuer's JWKS; keySet caches the keys and refetches them
// (rate-limited) when a token names an unknown key id, which is how key rotation is followed.
type OIDC struct {
	cfg      OIDCConfig
	verifier *oidc.IDTokenVerifier
}

// NewOIDC discovers the issuer's configuration.
func NewOIDC(ctx context.Context, cfg OIDCConfig) (*OIDC, error) {
	p, err := oidc.NewProvider(oidc.ClientContext(context.WithoutCancel(ctx), nil), cfg.IssuerURL)
	if err != nil {
		return nil, fmt.Errorf("OIDC discovery at %s: %w", cfg.IssuerURL, err)
	}
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := p.Claims(&meta); err != nil || meta.JWKSURI == "" {
		return nil, fmt.Errorf("OIDC discovery at %s: no jwks_uri", cfg.IssuerURL)
	}
	skew := cfg.ClockSkew
	v := oidc.NewVerifier(cfg.IssuerURL, newKeySet(meta.JWKSURI, cfg.JWKSMinRefresh), &oidc.Config{
		ClientID:             cfg.Audience,
		SupportedSigningAlgs: signingAlgs,
		// go-oidc has no leeway setting; checking expiry against a clock set back by the
		// skew gives tokens that much grace.
		Now: func() time.Time { return time.Now().Add(-skew) },
	})
	return &OIDC{cfg: cfg, verifier: v}, nil
}

// Claims are the parts of a verified token we use.
type Claims struct {
	Subject string
	Azp     string
	Roles   []string
	Email   string
	Name    string
}

type rawClaims struct {
	Azp         string `json:"azp"`
	Email       string `json:"email"`
	Name        string `json:"name"`
	RealmAccess struct {
		Roles []string `json:"roles"`
	} `json:"realm_access"`
	ResourceAccess map[string]struct {
		Roles []string `json:"roles"`
	} `json:"resource_access"`
}

// Verify checks signature, issuer, audience and expiry and returns the claims.
func (o *OIDC) Verify(ctx context.Context, raw string) (*Claims, error) {
	tok, err := o.verifier.Verify(ctx, raw)
	if err != nil {
		return nil, err
	}
	if tok.Subject == "" {
		return nil, fmt.Errorf("token has no sub claim")
	}
	var rc rawClaims
	if err := tok.Claims(&rc); err != nil {
		return nil, fmt.Errorf("token claims: %w", err)
	}
	c := &Claims{Subject: tok.Subject, Azp: rc.Azp, Email: rc.Email, Name: rc.Name}
	c.Roles = append(c.Roles, rc.RealmAccess.Roles...)
	if ra, ok := rc.ResourceAccess[o.cfg.Audience]; ok {
		c.Roles = append(c.Roles, ra.Roles...)
	}
	return c, nil
}

// MapRoles turns IdP role names into our roles.
func (o *OIDC) MapRoles(names []string) map[Role]bool {
	out := map[Role]bool{}
	for _, n := range names {
		switch n {
		case o.cfg.ViewerRole:
			out[Viewer] = true
		case o.cfg.EditorRole:
			out[Editor] = true
		case o.cfg.AdminRole:
			out[Admin] = true
		case o.cfg.PipelineRole:
			out[Pipeline] = true
		}
	}
	return out
}
