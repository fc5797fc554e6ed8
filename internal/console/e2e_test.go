package console_test

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/iotsupport/iotsupport/internal/apitest"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

var screenshots = flag.Bool("screenshots", false, "write every page at desktop and phone width to docs/screenshots/")

// browserPath finds Debian's chromium. Missing, the test fails with the command that
// installs it: a browser test that skips is a test nobody runs.
func browserPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM_BIN"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed; install it with `apt-get install -y chromium` (or set CHROMIUM_BIN)")
	return ""
}

func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browserPath(t)), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900), chromedp.Flag("lang", "en-US"))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// run runs steps or fails the test, naming the step.
func run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

func eval[T any](t *testing.T, ctx context.Context, js string, opts ...chromedp.EvaluateOption) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, opts...))
	if err != nil {
		t.Fatalf("evaluate %.60s: %v", js, err)
	}
	return v
}

// checkA11y injects axe-core (vendored under testdata) and fails on any serious or
// critical violation of the current page.
func checkA11y(t *testing.T, ctx context.Context, page string) {
	t.Helper()
	if eval[bool](t, ctx, `typeof axe === "undefined"`) {
		src, err := os.ReadFile(filepath.Join("testdata", "axe", "axe.min.js"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](string(src))); err != nil {
			t.Fatalf("inject axe-core: %v", err)
		}
	}
	res := eval[struct {
		Passes int
		Bad    []string
		Minor  []string
	}](t, ctx, `axe.run(document).then(r => ({passes: r.passes.length,
		bad: r.violations.filter(v => v.impact === "serious" || v.impact === "critical").map(v => v.impact + " " + v.id + ": " + v.help + " at " + v.nodes.map(n => n.target.join(" ")).join(", ")),
		minor: r.violations.filter(v => v.impact !== "serious" && v.impact !== "critical").map(v => v.impact + " " + v.id)}))`, chromedp.EvalAwaitPromise)
	if res.Passes == 0 {
		t.Fatalf("axe on %s checked nothing", page)
	}
	for _, v := range res.Bad {
		t.Errorf("axe on %s: %s", page, v)
	}
	t.Logf("axe on %s: %d rules pass; minor findings %v", page, res.Passes, res.Minor)
}

// visit navigates, waits for the main landmark, checks that our scripts loaded under the
// CSP (htmx defined), runs axe, and takes the screenshots when asked.
func visit(t *testing.T, ctx context.Context, url, name string) {
	t.Helper()
	run(t, ctx, "open "+name, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS("main")))
	settle(t, ctx, name)
}

func settle(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if !eval[bool](t, ctx, `typeof htmx !== "undefined"`) {
		t.Fatalf("%s: htmx did not load (CSP or embedding broken)", name)
	}
	checkA11y(t, ctx, name)
	if *screenshots && documented[name] {
		shoot(t, ctx, name)
	}
}

// documented are the pages docs/screenshots shows.
var documented = map[string]bool{"login": true, "overview": true, "models": true, "model": true, "devices": true, "device": true,
	"device-secret": true, "coredump-pending": true, "coredump": true, "tokens": true, "audit": true,
	"crash-groups": true, "crash-group": true}

func shoot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := filepath.Join("..", "..", "docs", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, size := range []struct {
		suffix string
		w, h   int64
		mobile bool
	}{{"desktop", 1280, 900, false}, {"phone", 375, 812, true}} {
		var opts []chromedp.EmulateViewportOption
		if size.mobile {
			opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateScale(2))
		}
		run(t, ctx, "viewport", chromedp.EmulateViewport(size.w, size.h, opts...), chromedp.Sleep(150*time.Millisecond))
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+"-"+size.suffix+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(t, ctx, "reset viewport", chromedp.EmulateViewport(1280, 900))
}

// TestBrowserEndToEnd drives the console in real headless Chromium: sign in with a token,
// create a model, upload a real bundle through the page, create a device and see its
// secret once, let the device upload a real core dump through the API, watch the PENDING
// dump page update itself until it shows the crashed task and top frame, and follow its
// link to the crash group page, which shows the group's title; then a viewer sees no
// write control, a cross-site form post is refused, and logout ends the session.
// axe-core checks every page.
func TestBrowserEndToEnd(t *testing.T) {
	browserPath(t) // fails here, before any set-up, when chromium is missing
	testenv.ForEach(t, func(t *testing.T, env *testenv.Env) {
		// Uncached overview: the page right after the dump shows it (the cache is tested apart).
		browserEndToEnd(t, newBrowser(t), apitest.Start(t, env, "CONSOLE_OVERVIEW_CACHE_TTL", "0"))
	})
}

func browserEndToEnd(t *testing.T, ctx context.Context, s *apitest.Server) {
	base := s.URL

	// Sign in.
	visit(t, ctx, base+"/", "login")
	run(t, ctx, "sign in", chromedp.SendKeys(chromedp.CSS("#token"), s.Tokens["admin"]), chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS("#who")))
	if who := text(t, ctx, "#who"); who != "test-admin" {
		t.Fatalf("signed in as %q", who)
	}
	settle(t, ctx, "overview-empty")

	// Create a model.
	visit(t, ctx, base+"/models", "models")
	run(t, ctx, "create model", chromedp.SendKeys(chromedp.CSS("#code"), "e2e_c3"), chromedp.SendKeys(chromedp.CSS("#name"), "E2E board"),
		chromedp.Click(chromedp.CSS("#model-create button[type=submit]")), chromedp.WaitVisible(chromedp.CSS("#upload")))
	modelURL := eval[string](t, ctx, `location.pathname`)

	// A wrong file is refused in words, next to the upload.
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.zip")
	_ = os.WriteFile(junk, []byte("not a zip at all"), 0o644)
	run(t, ctx, "upload junk", chromedp.SetUploadFiles(chromedp.CSS("#file"), []string{junk}), chromedp.Click(chromedp.CSS("#upload-button")))
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("upload-status").textContent.startsWith("Upload refused") || null`)); err != nil {
		t.Fatalf("refused upload not reported: %v", err)
	}
	// Upload a real bundle through the page's script (progress bar, then the model page).
	bundle := filepath.Join(dir, "e2e_c3.zip")
	if err := os.WriteFile(bundle, bundletest.BuildCase(t, "e2e_c3", "esp32c3", bundletest.Options{Version: "1.0.0"}), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, ctx, "upload bundle", chromedp.SetUploadFiles(chromedp.CSS("#file"), []string{bundle}), chromedp.Click(chromedp.CSS("#upload-button")),
		chromedp.WaitVisible(chromedp.CSS("#uploaded")))
	if v := text(t, ctx, "#current-version"); v != "1.0.0" {
		t.Fatalf("current version %q after upload", v)
	}
	settle(t, ctx, "model")

	// Create a device: its secret is shown once, with a copy button.
	visit(t, ctx, base+"/devices", "devices-empty")
	run(t, ctx, "create device", chromedp.SetValue(chromedp.CSS("#model"), strings.TrimPrefix(modelURL, "/models/")),
		chromedp.Click(chromedp.CSS("#device-create-button")), chromedp.WaitVisible(chromedp.CSS("#secret")))
	secret := eval[string](t, ctx, `document.getElementById("secret").value`)
	key := text(t, ctx, "#device-key")
	if len(secret) < 20 || len(key) != 8 {
		t.Fatalf("secret %q key %q", secret, key)
	}
	run(t, ctx, "copy", chromedp.Click(chromedp.CSS("button.copy")), chromedp.WaitVisible(chromedp.CSS("#copy-status")))
	settle(t, ctx, "device-secret")
	run(t, ctx, "to device", chromedp.Click(chromedp.CSS("main a[href^='/devices/']")), chromedp.WaitVisible(chromedp.CSS("#device-edit")))
	if strings.Contains(eval[string](t, ctx, `document.body.innerHTML`), secret) {
		t.Fatal("the device page shows the secret again")
	}
	deviceURL := eval[string](t, ctx, `location.pathname`)

	// The device uploads a real core dump through the API; the page shows it PENDING and
	// updates itself (htmx) once the decode workers have recorded it.
	caseDir := filepath.Dir(espimagetest.ELFPath(t, "esp32c3"))
	dump, err := os.ReadFile(filepath.Join(caseDir, "coredump.b64"))
	if err != nil {
		t.Fatal(err)
	}
	cid := int(s.Basic(key, secret).Expect(201, "POST", "/api/iot/coredump?chip=esp32c3&firmware_version=1.0.0", dump).Map(t)["coredump_id"].(float64))
	visit(t, ctx, fmt.Sprintf("%s%s/coredumps/%d", base, deviceURL, cid), "coredump-pending")
	if st := text(t, ctx, "#parse-status"); st != "PENDING" {
		t.Fatalf("status %q before the workers run", st)
	}
	stop, err := s.App.StartBackground(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	run(t, ctx, "decoded in place", chromedp.WaitVisible(chromedp.CSS("#crashed-task")))
	exp, _ := os.ReadFile(filepath.Join(caseDir, "expected_output"))
	task := regexp.MustCompile(`name: '([^']*)'`).FindSubmatch(exp)[1]
	if got := text(t, ctx, "#crashed-task"); got != string(task) {
		t.Fatalf("crashed task %q, want %q", got, task)
	}
	if top := text(t, ctx, "#top-frame"); !regexp.MustCompile(`^\w+ .+:\d+$`).MatchString(top) {
		t.Fatalf("top frame %q lacks function and file:line", top)
	}
	settle(t, ctx, "coredump")
	// The dump page links its crash group, whose page shows the group's title; the list
	// shows the group with its sparkline.
	run(t, ctx, "to crash group", chromedp.WaitVisible(chromedp.CSS("#crash-group-link")), chromedp.Click(chromedp.CSS("#crash-group-link")),
		chromedp.WaitVisible(chromedp.CSS("#group-title")))
	groupURL := eval[string](t, ctx, `location.pathname`)
	if title := text(t, ctx, "#group-title"); !strings.Contains(title, "fail_once") || !strings.Contains(title, "abort()") {
		t.Fatalf("crash group title %q", title)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll("#group-samples a[href*='/coredumps/']").length`); n != 1 {
		t.Fatalf("crash group page lists %d sample dumps", n)
	}
	settle(t, ctx, "crash-group")
	visit(t, ctx, base+"/crash-groups", "crash-groups")
	if n := eval[int](t, ctx, `document.querySelectorAll("#crash-groups svg.spark[role=img] rect").length`); n != 1 {
		t.Fatalf("crash group list draws %d sparkline bars", n)
	}
	visit(t, ctx, base+deviceURL, "device")
	visit(t, ctx, base+"/devices", "devices")
	visit(t, ctx, base+"/", "overview")
	// The overview shows the crash, the version running and the group among the top ones.
	if n := eval[int](t, ctx, `document.querySelectorAll(".top-groups a[href='`+groupURL+`']").length`); n != 1 {
		t.Fatalf("overview links the crash group %d times", n)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll("table.versions-running code").length`); n != 1 {
		t.Fatalf("overview lists %d versions running", n)
	}
	visit(t, ctx, base+"/tokens", "tokens")
	visit(t, ctx, base+"/audit", "audit")

	// Logout ends the session.
	run(t, ctx, "logout", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#token")))
	visit(t, ctx, base+"/models", "login-redirect")
	if loc := eval[string](t, ctx, `location.pathname + location.search`); loc != "/login?next=%2Fmodels" {
		t.Fatalf("after logout /models went to %q", loc)
	}

	// A viewer sees no write control anywhere.
	run(t, ctx, "viewer sign in", chromedp.SendKeys(chromedp.CSS("#token"), s.Tokens["viewer"]), chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS("#who")))
	for _, p := range []string{"/", "/models", modelURL, "/devices", deviceURL, fmt.Sprintf("%s/coredumps/%d", deviceURL, cid), "/crash-groups", groupURL} {
		visit(t, ctx, base+p, "viewer"+strings.ReplaceAll(p, "/", "-"))
		n := eval[int](t, ctx, `document.querySelectorAll("form[method=post]:not(.who), input[type=file], textarea, button.danger").length`)
		if n != 0 {
			t.Errorf("viewer sees %d write controls on %s", n, p)
		}
	}

	// A cross-site form post, with the session cookie, is refused (403) and changes nothing.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><title>evil</title><form method="post" action="%s/models"><input name="code" value="pwned"><input name="name" value="x"><input name="csrf" value="guess"><button id="go">go</button></form>`, base)
	}))
	defer evil.Close()
	run(t, ctx, "cross-site post", chromedp.Navigate(evil.URL), chromedp.Click(chromedp.CSS("#go")), chromedp.WaitVisible(chromedp.CSS("#error-message")))
	if msg := text(t, ctx, "#error-message"); !strings.Contains(msg, "Cross-site request refused") {
		t.Fatalf("cross-site post answered %q", msg)
	}
	if n := s.Expect(200, "GET", "/api/device-models", nil).Map(t)["count"].(float64); n != 1 {
		t.Fatalf("%v models after the cross-site post", n)
	}
	run(t, ctx, "logout viewer", chromedp.Navigate(base+"/"), chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#token")))
}
