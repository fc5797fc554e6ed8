package auth

import (
	"context"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/auth/oidctest"
)

// TestKeySetRefreshIsRateLimited: unknown key ids fetch the JWKS at most once per interval,
// and a real rotation is followed once the interval has passed.
func TestKeySetRefreshIsRateLimited(t *testing.T) {
	is := oidctest.New(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ks := newKeySet(is.URL+"/jwks", time.Minute)
	ks.now = func() time.Time { return now }
	ctx := context.Background()
	tok := func() string { return is.Token(oidctest.Claims{Subject: "a", Audience: "x"}) }
	if _, err := ks.VerifySignature(ctx, tok()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := ks.VerifySignature(ctx, is.Token(oidctest.Claims{Subject: "m", Audience: "x", SignWithForeign: true})); err == nil {
			t.Fatal("forged token verified")
		}
	}
	if is.JWKSHits != 1 {
		t.Fatalf("JWKS fetched %d times, want 1", is.JWKSHits)
	}
	is.Rotate()
	now = now.Add(30 * time.Second)
	if _, err := ks.VerifySignature(ctx, tok()); err == nil || is.JWKSHits != 1 {
		t.Fatalf("within the interval: err %v, %d fetches; want a refusal and no fetch", err, is.JWKSHits)
	}
	now = now.Add(31 * time.Second)
	if _, err := ks.VerifySignature(ctx, tok()); err != nil || is.JWKSHits != 2 {
		t.Fatalf("after the interval: err %v, %d fetches; want the rotated key verified with one fetch", err, is.JWKSHits)
	}
}
