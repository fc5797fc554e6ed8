package testsession_test

import (
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/auth"
	"github.com/iotsupport/iotsupport/internal/testsession"
)

func TestSessionLifetime(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := testsession.New(func() time.Time { return now })
	token, expires, err := st.Create(testsession.Session{Subject: "u", Roles: []string{"viewer", "pipeline"}})
	if err != nil || !expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("Create: %v %v", expires, err)
	}
	id := st.Identity(token)
	if id == nil || id.Kind != auth.KindTestSession || !id.Has(auth.Viewer) || id.Has(auth.Editor) || !id.Has(auth.Pipeline) || !id.FromCookie {
		t.Fatalf("identity: %+v", id)
	}
	if st.Identity("test-session-unknown") != nil || st.Identity("eyJhbGciOi.jwt.value") != nil {
		t.Fatal("unknown cookie values must not resolve")
	}
	now = now.Add(time.Hour)
	if st.Identity(token) != nil {
		t.Fatal("session outlived its hour")
	}
	other, _, _ := st.Create(testsession.Session{Subject: "v"})
	st.Delete(other)
	if st.Identity(other) != nil {
		t.Fatal("deleted session still resolves")
	}
}

func TestForcedErrorIsOneShot(t *testing.T) {
	st := testsession.New(nil)
	if st.ForceError(200) == nil || st.ForceError(600) == nil || st.TakeForcedError() != 0 {
		t.Fatal("non-error statuses must be refused and change nothing")
	}
	if err := st.ForceError(502); err != nil {
		t.Fatal(err)
	}
	if st.TakeForcedError() != 502 || st.TakeForcedError() != 0 {
		t.Fatal("forced error is not one-shot")
	}
}
