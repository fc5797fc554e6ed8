package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// signingAlgs are the JWT algorithms accepted.
var signingAlgs = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256"}

// keySet is the issuer's JWKS, fetched again when a token names a key id it does not
// hold (key rotation), but at most once per minInterval: otherwise every forged token
// with a made-up key id would cost a request to the issuer.
type keySet struct {
	url         string
	client      *http.Client
	minInterval time.Duration
	now         func() time.Time

	mu      sync.Mutex // held while fetching, so concurrent misses share one fetch
	keys    []jose.JSONWebKey
	fetched time.Time // last fetch attempt, successful or not
}

func newKeySet(url string, minInterval time.Duration) *keySet {
	return &keySet{url: url, client: &http.Client{Timeout: 10 * time.Second}, minInterval: minInterval, now: time.Now}
}

// VerifySignature implements oidc.KeySet.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	algs := make([]jose.SignatureAlgorithm, len(signingAlgs))
	for i, a := range signingAlgs {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	jws, err := jose.ParseSignedCompact(raw, algs)
	if err != nil {
		return nil, fmt.Errorf("malformed jwt: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("jwt must carry exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	k.mu.Lock()
	keys := k.keys
	k.mu.Unlock()
	if payload, known, err := verifyWith(jws, keys, kid); known {
		return payload, err
	}
	keys, err = k.refresh(ctx)
	if err != nil {
		return nil, err
	}
	if payload, known, err := verifyWith(jws, keys, kid); known {
		return payload, err
	}
	return nil, fmt.Errorf("no key with id %q in the issuer's JWKS", kid)
}

// verifyWith checks jws against the keys named kid (every key when kid is empty); known
// reports whether there was such a key.
func verifyWith(jws *jose.JSONWebSignature, keys []jose.JSONWebKey, kid string) (payload []byte, known bool, err error) {
	for i := range keys {
		if kid != "" && keys[i].KeyID != kid {
			continue
		}
		known = true
		if p, err := jws.Verify(&keys[i]); err == nil {
			return p, true, nil
		}
	}
	if known {
		return nil, true, errors.New("signature does not verify")
	}
	return nil, false, nil
}

// refresh fetches the JWKS unless the last attempt was less than minInterval ago, and
// returns the keys held then.
func (k *keySet) refresh(ctx context.Context) ([]jose.JSONWebKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	if !k.fetched.IsZero() && now.Sub(k.fetched) < k.minInterval {
		return k.keys, nil
	}
	k.fetched = now
	keys, err := k.fetch(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	k.keys = keys
	return keys, nil
}

func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", k.url, resp.Status)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("decode %s: %w", k.url, err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		var key jose.JSONWebKey
		// Keys of types we cannot use (e.g. encryption keys) are skipped, not fatal.
		if err := key.UnmarshalJSON(raw); err == nil && key.Use != "enc" {
			keys = append(keys, key)
		}
	}
	return keys, nil
}
