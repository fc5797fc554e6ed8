package sessions_test

import (
	"context"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/auth"
	"github.com/iotsupport/iotsupport/internal/sessions"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

func TestSessionsExpireAndEndWithTheirToken(t *testing.T) {
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		tokens := auth.NewTokens(env.DB)
		tk, secret, err := tokens.Create(ctx, "alice", "editor")
		if err != nil {
			t.Fatal(err)
		}
		id, err := tokens.Authenticate(ctx, secret)
		if err != nil || id == nil || id.TokenID != tk.ID {
			t.Fatalf("token identity %+v, %v", id, err)
		}
		now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
		st := sessions.New(env.DB, sessions.Config{Idle: 30 * time.Minute, Max: 2 * time.Hour})
		st.SetClock(func() time.Time { return now })

		raw, s, err := st.Create(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.CSRF) < 32 || raw == s.CSRF {
			t.Fatalf("csrf token %q", s.CSRF)
		}
		got, err := st.Get(ctx, raw)
		if err != nil || got == nil || got.Identity.Name != "alice" || !got.Identity.Has(auth.Editor) || got.Identity.Has(auth.Admin) || !got.Identity.FromCookie || got.CSRF != s.CSRF {
			t.Fatalf("get: %+v, %v", got, err)
		}
		if got, _ := st.Get(ctx, raw+"x"); got != nil {
			t.Fatal("an unknown cookie value found a session")
		}

		// Used every 20 minutes it lives past the idle limit, but never past the absolute one.
		for i := 0; i < 5; i++ {
			now = now.Add(20 * time.Minute)
			if got, _ := st.Get(ctx, raw); got == nil {
				t.Fatalf("session ended after %d active steps", i+1)
			}
		}
		now = now.Add(21 * time.Minute) // 2h01 after sign-in
		if got, _ := st.Get(ctx, raw); got != nil {
			t.Fatal("session outlived its absolute expiry")
		}

		// Idle: 31 minutes without a request ends it.
		raw2, _, _ := st.Create(ctx, id)
		now = now.Add(31 * time.Minute)
		if got, _ := st.Get(ctx, raw2); got != nil {
			t.Fatal("session outlived its idle expiry")
		}

		// Revoking the API token ends the sessions signed in with it.
		raw3, _, _ := st.Create(ctx, id)
		if got, _ := st.Get(ctx, raw3); got == nil {
			t.Fatal("fresh session not found")
		}
		if err := tokens.RevokeByID(ctx, tk.ID); err != nil {
			t.Fatal(err)
		}
		if got, _ := st.Get(ctx, raw3); got != nil {
			t.Fatal("session outlived its revoked token")
		}

		// Delete ends a session; deleting again is no error.
		oidcID := &auth.Identity{Kind: auth.KindOIDC, Name: "sub-1", Email: "a@example.com", FullName: "Alice", Roles: map[auth.Role]bool{auth.Viewer: true}}
		raw4, _, _ := st.Create(ctx, oidcID)
		if got, _ := st.Get(ctx, raw4); got == nil || got.Identity.Email != "a@example.com" || got.Identity.FullName != "Alice" {
			t.Fatalf("oidc session: %+v", got)
		}
		if err := st.Delete(ctx, raw4); err != nil {
			t.Fatal(err)
		}
		if err := st.Delete(ctx, raw4); err != nil {
			t.Fatal(err)
		}
		if got, _ := st.Get(ctx, raw4); got != nil {
			t.Fatal("deleted session still found")
		}
	})
}
