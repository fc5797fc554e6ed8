package main_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/bundle/bundletest"
	"github.com/iotsupport/iotsupport/internal/db"
	"github.com/iotsupport/iotsupport/internal/legacy"
	"github.com/iotsupport/iotsupport/internal/proctest"
	"github.com/iotsupport/iotsupport/internal/testenv"
)

// legacyFixture is an older service's installation: its database at some revision, its
// ASSETS_DIR and COREDUMPS_DIR, and (from revision 006 on) what it already put into S3.
type legacyFixture struct {
	rev       string
	dsn       string
	s3        blob.S3Config
	d         *db.DB
	assets    string
	dumps     string
	environ   []string
	models    map[string]int64
	devices   map[string]int64
	zips      map[string][]byte    // "code/version" -> bundle ZIP
	mtimes    map[string]time.Time // "code/version" -> upload time expected
	dumpBytes map[int64][]byte     // core dump id -> bytes it must download as
	missing   []int64              // rows whose file is gone
	already   int                  // ZIPs the older service had already put into S3
}

func elfCase(t *testing.T, code, version string, omit ...string) []byte {
	t.Helper()
	return bundletest.BuildCase(t, code, "esp32c3", bundletest.Options{Version: version, Omit: omit})
}

func (f *legacyFixture) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	if _, err := f.d.ExecContext(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func (f *legacyFixture) id(t *testing.T, q string, args ...any) int64 {
	t.Helper()
	var id int64
	if err := f.d.QueryRowContext(context.Background(), q, args...).Scan(&id); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return id
}

func newLegacyFixture(t *testing.T, rev string) *legacyFixture {
	ctx := context.Background()
	f := &legacyFixture{rev: rev, dsn: testenv.PostgresURL(t), s3: testenv.S3(t), models: map[string]int64{}, devices: map[string]int64{},
		zips: map[string][]byte{}, mtimes: map[string]time.Time{}, dumpBytes: map[int64][]byte{}}
	var err error
	if f.d, err = db.Open(ctx, f.dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.d.Close() })
	steps := []string{"005"}
	switch rev {
	case "006":
		steps = append(steps, "006")
	case "007":
		steps = append(steps, "006", "007")
	case "008":
		steps = append(steps, "006", "007", "008")
	}
	for _, s := range steps {
		ddl, err := os.ReadFile(filepath.Join("..", "..", "internal", "legacy", "testdata", "alembic_"+s+".sql"))
		if err != nil {
			t.Fatal(err)
		}
		f.exec(t, string(ddl))
	}
	hasFilename := rev == "005" || rev == "006"

	for _, m := range []struct{ code, current string }{{"alpha", "1.10.0"}, {"beta", "0.9.0"}, {"gamma", ""}} {
		var cur any
		if m.current != "" {
			cur = m.current
		}
		f.models[m.code] = f.id(t, `INSERT INTO device_models (code, name, firmware_version) VALUES ($1, $2, $3) RETURNING id`, m.code, strings.ToUpper(m.code), cur)
	}
	for key, model := range map[string]string{"aaaa2222": "alpha", "bbbb3333": "beta", "cccc4444": "alpha"} {
		f.devices[key] = f.id(t, `INSERT INTO devices (key, device_model_id, config, device_name) VALUES ($1, $2, '{"deviceName":"x"}', 'x') RETURNING id`, key, f.models[model])
	}

	// ASSETS_DIR: versioned ZIPs whose file times are the upload order (not the name order),
	// one without .map and sdkconfig, a flat .bin, and a directory of an unknown model.
	f.assets = t.TempDir()
	base := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	put := func(code, version string, at time.Time, omit ...string) {
		z := elfCase(t, code, version, omit...)
		dir := filepath.Join(f.assets, code)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "firmware-"+version+".zip")
		if err := os.WriteFile(p, z, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
		f.zips[code+"/"+version] = z
		f.mtimes[code+"/"+version] = at
	}
	put("alpha", "1.8.0", base, "alpha.map", "sdkconfig")
	put("alpha", "1.9.0", base.Add(30*24*time.Hour))
	put("alpha", "1.10.0", base.Add(60*24*time.Hour))
	put("beta", "2.0.0", base.Add(90*24*time.Hour))
	if err := os.WriteFile(filepath.Join(f.assets, "firmware-beta.bin"), []byte("flat legacy image"), 0o644); err != nil {
		t.Fatal(err)
	}
	ghost := elfCase(t, "ghost", "1.0.0")
	if err := os.MkdirAll(filepath.Join(f.assets, "ghost"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.assets, "ghost", "firmware-1.0.0.zip"), ghost, 0o644); err != nil {
		t.Fatal(err)
	}

	// From 006 on, the older service stored bundles in S3 itself: one such version.
	var store blob.Store
	if rev != "005" {
		st, err := blob.NewS3(ctx, f.s3)
		if err != nil {
			t.Fatal(err)
		}
		store = st
		z := elfCase(t, "alpha", "1.7.0")
		at := base.Add(-30 * 24 * time.Hour)
		f.exec(t, `INSERT INTO firmware_versions (device_model_id, version, uploaded_at) VALUES ($1, '1.7.0', $2)`, f.models["alpha"], at)
		for obj, data := range zipArtifacts(t, "alpha", z) {
			if err := st.Put(ctx, "firmware/alpha/1.7.0/"+obj, bytes.NewReader(data), int64(len(data)), ""); err != nil {
				t.Fatal(err)
			}
		}
		f.zips["alpha/1.7.0"] = z
		f.mtimes["alpha/1.7.0"] = at
		// Its ZIP is still on disk too: already migrated, left alone.
		zp := filepath.Join(f.assets, "alpha", "firmware-1.7.0.zip")
		if err := os.WriteFile(zp, z, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(zp, at, at); err != nil {
			t.Fatal(err)
		}
		f.already = 1
	}

	// Core dumps: rows with files, a row whose file is gone, an orphan file, a directory of
	// an unknown device; from 006 on also a dump the older service put into S3 itself.
	f.dumps = t.TempDir()
	writeDump := func(key, name string, data []byte) {
		dir := filepath.Join(f.dumps, key)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	row := func(key, name string, data []byte) int64 {
		n++
		at := base.Add(time.Duration(n) * time.Hour)
		if hasFilename && name != "" {
			return f.id(t, `INSERT INTO coredumps (device_id, filename, chip, firmware_version, size, parse_status, uploaded_at)
				VALUES ($1, $2, 'esp32c3', '1.9.0', $3, 'PENDING', $4) RETURNING id`, f.devices[key], name, len(data), at)
		}
		return f.id(t, `INSERT INTO coredumps (device_id, chip, firmware_version, size, parse_status, uploaded_at)
			VALUES ($1, 'esp32c3', '1.9.0', $2, 'PENDING', $3) RETURNING id`, f.devices[key], len(data), at)
	}
	dump := func(i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("core dump %d|", i)), 100+i) }
	if hasFilename {
		for i, d := range []struct{ key, name string }{
			{"aaaa2222", "coredump_20260101T000000_000001Z.dmp"},
			{"aaaa2222", "coredump_20260102T000000_000002Z.dmp"},
			{"bbbb3333", "coredump_20260103T000000_000003Z.dmp"},
		} {
			data := dump(i)
			id := row(d.key, d.name, data)
			writeDump(d.key, d.name, data)
			f.dumpBytes[id] = data
		}
		f.missing = append(f.missing, row("aaaa2222", "coredump_20260104T000000_000004Z.dmp", dump(9)))
		writeDump("aaaa2222", "coredump_20260105T000000_999999Z.dmp", dump(10))
		writeDump("zzzz9999", "coredump_20260106T000000_000006Z.dmp", dump(11))
	}
	if store != nil {
		data := dump(20)
		id := row("bbbb3333", "", data)
		if err := store.Put(ctx, fmt.Sprintf("coredumps/bbbb3333/%d.dmp", id), bytes.NewReader(data), int64(len(data)), ""); err != nil {
			t.Fatal(err)
		}
		f.dumpBytes[id] = data
	}

	f.environ = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "DATABASE_URL=" + f.dsn, "LOG_LEVEL=warn", "LOG_FORMAT=json",
		"STORAGE_BACKEND=s3", "S3_ENDPOINT_URL=" + f.s3.Endpoint, "S3_ACCESS_KEY_ID=" + f.s3.AccessKeyID,
		"S3_SECRET_ACCESS_KEY=" + f.s3.SecretAccessKey, "S3_BUCKET_NAME=" + f.s3.Bucket, "ASSETS_DIR=" + f.assets}
	if hasFilename {
		f.environ = append(f.environ, "COREDUMPS_DIR="+f.dumps)
	}
	return f
}

// zipArtifacts maps a bundle's members to the stored object names.
func zipArtifacts(t *testing.T, code string, z []byte) map[string][]byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{code + ".bin": "firmware.bin", code + ".elf": "firmware.elf", code + ".map": "firmware.map",
		"sdkconfig": "sdkconfig", "version.json": "version.json"}
	out := map[string][]byte{}
	for _, zf := range zr.File {
		obj, ok := names[zf.Name]
		if !ok {
			continue
		}
		rc, err := zf.Open()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[obj] = data
	}
	return out
}

// snapshot is every table's rows and the bucket's listing, to prove a run changed nothing.
func (f *legacyFixture) snapshot(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	rows, err := f.d.QueryContext(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY table_name`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	var b strings.Builder
	for _, tbl := range tables {
		var data string
		if err := f.d.QueryRowContext(ctx, fmt.Sprintf(`SELECT COALESCE(json_agg(r ORDER BY r), '[]')::text FROM (SELECT row_to_json(t)::text AS r FROM %q t) x`, tbl)).Scan(&data); err != nil {
			t.Fatalf("dump %s: %v", tbl, err)
		}
		fmt.Fprintf(&b, "%s: %s\n", tbl, data)
	}
	b.WriteString(bucketListing(t, f.s3))
	return b.String()
}

// bucketListing lists the bucket without creating it ("no bucket" when it does not exist).
func bucketListing(t *testing.T, cfg blob.S3Config) string {
	t.Helper()
	ctx := context.Background()
	c := s3.New(s3.Options{Region: "us-east-1", UsePathStyle: true, BaseEndpoint: aws.String(cfg.Endpoint),
		Credentials: credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")})
	if _, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &cfg.Bucket}); err != nil {
		var nf *types.NotFound
		if errors.As(err, &nf) || strings.Contains(err.Error(), "404") {
			return "no bucket\n"
		}
		t.Fatalf("head bucket: %v", err)
	}
	var b strings.Builder
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: &cfg.Bucket})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			fmt.Fprintf(&b, "%s %d %s %s\n", aws.ToString(o.Key), aws.ToInt64(o.Size), aws.ToString(o.ETag), o.LastModified.UTC().Format(time.RFC3339Nano))
		}
	}
	return b.String()
}

func runReport(t *testing.T, environ []string, args ...string) (*legacy.Report, string, int) {
	t.Helper()
	out, errOut, code := proctest.Run(t, environ, append([]string{"migrate-to-s3", "--json"}, args...)...)
	if code != 0 {
		return nil, errOut, code
	}
	var r legacy.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("report: %v\n%s", err, out)
	}
	return &r, errOut, code
}

func apiGet(t *testing.T, base, token, path string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

var tokenRE = regexp.MustCompile(`iots_[A-Za-z0-9_-]{43}`)

func TestAdoptOlderInstallation(t *testing.T) {
	for _, rev := range []string{"005", "006", "007", "008"} {
		t.Run("revision_"+rev, func(t *testing.T) {
			t.Parallel()
			adoptFlow(t, rev)
		})
	}
}

func adoptFlow(t *testing.T, rev string) {
	f := newLegacyFixture(t, rev)
	env := f.environ
	hasFilename := rev == "005" || rev == "006"

	// serve never adopts silently.
	if _, errOut, code := proctest.Run(t, env, "serve"); code == 0 || !strings.Contains(errOut, "iotsupport migrate") {
		t.Fatalf("serve on an unadopted database: %d %s", code, errOut)
	}
	out, errOut, code := proctest.Run(t, env, "migrate")
	if code != 0 || !strings.Contains(out, "adopted the older service's database at revision "+rev) {
		t.Fatalf("migrate: %d\n%s\n%s", code, out, errOut)
	}
	if out, _, _ := proctest.Run(t, env, "migrate"); strings.Contains(out, "adopted") {
		t.Fatalf("second migrate adopted again: %s", out)
	}

	// Dry run: exactly what a real run does, and nothing written anywhere (not even a bucket).
	before := f.snapshot(t)
	if rev == "005" && !strings.HasSuffix(before, "no bucket\n") {
		t.Fatalf("bucket exists before the dry run:\n%s", before)
	}
	dry, errOut, code := runReport(t, env, "--dry-run")
	if code != 0 {
		t.Fatalf("dry run: %d %s", code, errOut)
	}
	if after := f.snapshot(t); after != before {
		t.Fatalf("dry run changed something:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	wantFirmware := 4 // alpha 1.8.0, 1.9.0, 1.10.0, beta 2.0.0
	wantDumps := 0
	if hasFilename {
		wantDumps = 3
	}
	if dry.FirmwareMigrated != wantFirmware || dry.CoredumpsMigrated != wantDumps || dry.FlatBinaries != 1 {
		t.Fatalf("dry run report: %+v", dry)
	}
	warnings := strings.Join(dry.Warnings, "\n")
	for _, w := range []string{"Model directory 'ghost' has no matching DB record", "Model 'beta' has firmware_version 0.9.0, which exists only as the legacy flat firmware-beta.bin",
		"alpha/firmware-1.8.0.zip"} {
		if !strings.Contains(warnings, w) {
			t.Errorf("dry run warnings lack %q:\n%s", w, warnings)
		}
	}
	if hasFilename {
		if len(dry.Orphans) != 2 || len(dry.MissingFiles) != 1 {
			t.Fatalf("orphans %v, rows without file %v", dry.Orphans, dry.MissingFiles)
		}
	}
	if dry.FirmwareAlready != f.already {
		t.Fatalf("already migrated: %+v", dry)
	}
	textOut, _, _ := proctest.Run(t, env, "migrate-to-s3", "--dry-run")
	for _, l := range []string{"[DRY RUN] Would migrate firmware: alpha/1.10.0", "[DRY RUN] Migration complete.", "Firmware ZIPs migrated: 4"} {
		if !strings.Contains(textOut, l) {
			t.Fatalf("dry run text lacks %q:\n%s", l, textOut)
		}
	}
	if after := f.snapshot(t); after != before {
		t.Fatal("text dry run changed something")
	}

	// A run killed part-way: with core dumps, right after a dump's object was written and
	// before its row change committed; otherwise after two firmware versions.
	killAfter := 2
	if wantDumps >= 2 {
		killAfter = wantFirmware + 1
	}
	_, errOut, code = proctest.Run(t, append(env, fmt.Sprintf("IOTSUPPORT_TEST_KILL_AFTER=%d", killAfter)), "migrate-to-s3")
	if code != 137 {
		t.Fatalf("killed run exited %d: %s", code, errOut)
	}
	if hasFilename {
		var pending int
		if err := f.d.QueryRow(`SELECT count(*) FROM coredumps WHERE filename IS NOT NULL`).Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if pending != 3 { // the second file and the third, plus the row whose file is gone
			t.Fatalf("after the kill %d rows still have a filename, want 3", pending)
		}
	}

	second, errOut, code := runReport(t, env)
	if code != 0 {
		t.Fatalf("second run: %d %s", code, errOut)
	}
	if second.FirmwareMigrated+second.FirmwareAlready != wantFirmware+f.already || second.CoredumpsMigrated+second.CoredumpsAlready != wantDumps ||
		second.FirmwareMigrated == wantFirmware || second.FirmwareMigrated+second.CoredumpsMigrated == 0 {
		t.Fatalf("resumed run: %+v", second)
	}

	// Before finalizing, the API answers 404 "not yet migrated" for a dump whose file is gone.
	token := ""
	if hasFilename {
		p := proctest.Start(t, env)
		token = tokenRE.FindString(p.Output())
		st, body := apiGet(t, p.URL, token, fmt.Sprintf("/api/devices/%d/coredumps/%d/download", f.devices["aaaa2222"], f.missing[0]))
		if st != 404 || !strings.Contains(string(body), "not been migrated") {
			t.Fatalf("unmigrated dump: %d %s", st, body)
		}
		if err := p.Stop(20 * time.Second); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := proctest.Run(t, env, "migrate", "--finalize-legacy")
		if code == 0 || !strings.Contains(errOut, "1 core dump row(s) still have a legacy filename") {
			t.Fatalf("finalize with an unmigrated row: %d %s", code, errOut)
		}
		if out, errOut, code := proctest.Run(t, env, "migrate", "--finalize-legacy", "--discard-unmigrated"); code != 0 || !strings.Contains(out, "deleted 1 core dump row(s)") {
			t.Fatalf("finalize --discard-unmigrated: %d %s %s", code, out, errOut)
		}
	} else if out, errOut, code := proctest.Run(t, env, "migrate", "--finalize-legacy"); code != 0 {
		t.Fatalf("finalize: %d %s %s", code, out, errOut)
	}
	var cols int
	if err := f.d.QueryRow(`SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'coredumps' AND column_name = 'filename'`).Scan(&cols); err != nil || cols != 0 {
		t.Fatalf("filename column after finalize: %d %v", cols, err)
	}

	// Serve: every firmware and dump downloads with its original bytes, in file-time order.
	p := proctest.Start(t, env)
	if token == "" {
		token = tokenRE.FindString(p.Output())
	}
	for key, z := range f.zips {
		code, version, _ := strings.Cut(key, "/")
		arts := zipArtifacts(t, code, z)
		for obj, want := range arts {
			st, body := apiGet(t, p.URL, token, fmt.Sprintf("/api/device-models/%d/firmware-versions/%s/%s", f.models[code], version, obj))
			if st != 200 || !bytes.Equal(body, want) {
				t.Errorf("%s %s: %d, %d bytes (want %d)", key, obj, st, len(body), len(want))
			}
		}
	}
	st, body := apiGet(t, p.URL, token, fmt.Sprintf("/api/device-models/%d/firmware", f.models["alpha"]))
	if st != 200 || !bytes.Equal(body, zipArtifacts(t, "alpha", f.zips["alpha/1.10.0"])["firmware.bin"]) {
		t.Errorf("alpha current firmware: %d", st)
	}
	st, body = apiGet(t, p.URL, token, fmt.Sprintf("/api/device-models/%d/firmware-versions", f.models["alpha"]))
	var list struct {
		Versions []struct {
			Version    string    `json:"version"`
			UploadedAt time.Time `json:"uploaded_at"`
		} `json:"firmware_versions"`
	}
	if err := json.Unmarshal(body, &list); err != nil || st != 200 {
		t.Fatalf("versions: %d %s", st, body)
	}
	var got []string
	for _, v := range list.Versions {
		got = append(got, v.Version)
		if want := f.mtimes["alpha/"+v.Version]; !v.UploadedAt.Equal(want) {
			t.Errorf("alpha %s uploaded_at %s, want the file time %s", v.Version, v.UploadedAt, want)
		}
	}
	want := []string{"1.10.0", "1.9.0", "1.8.0"}
	if rev != "005" {
		want = append(want, "1.7.0")
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("retention order %v, want %v", got, want)
	}
	ids := make([]int64, 0, len(f.dumpBytes))
	for id := range f.dumpBytes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		var dev int64
		if err := f.d.QueryRow(`SELECT device_id FROM coredumps WHERE id = $1`, id).Scan(&dev); err != nil {
			t.Fatal(err)
		}
		st, body := apiGet(t, p.URL, token, fmt.Sprintf("/api/devices/%d/coredumps/%d/download", dev, id))
		if st != 200 || !bytes.Equal(body, f.dumpBytes[id]) {
			t.Errorf("core dump %d: %d, %d bytes", id, st, len(body))
		}
	}
	if err := p.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}

	// A third run has nothing to do and changes nothing.
	before = f.snapshot(t)
	third, errOut, code := runReport(t, env)
	if code != 0 || !third.NothingToDo() || third.FirmwareAlready != wantFirmware+f.already || third.CoredumpsAlready != wantDumps {
		t.Fatalf("third run: %d %+v %s", code, third, errOut)
	}
	textOut, _, _ = proctest.Run(t, env, "migrate-to-s3")
	if !strings.Contains(textOut, "Nothing to do") {
		t.Fatalf("third run text:\n%s", textOut)
	}
	if after := f.snapshot(t); after != before {
		t.Fatalf("third run changed something:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestMigrateToS3FailsWhenDatabaseOrStoreIsUnreachable(t *testing.T) {
	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LOG_LEVEL=warn", "ASSETS_DIR=" + t.TempDir()}
	_, errOut, code := proctest.Run(t, append(base, "DATABASE_URL=postgres://nobody@127.0.0.1:1/none"), "migrate-to-s3")
	if code != 1 || !strings.Contains(errOut, "cannot use the database") {
		t.Fatalf("database down: %d %s", code, errOut)
	}
	env := append(base, "DATABASE_URL=sqlite:"+filepath.Join(t.TempDir(), "x.db"), "STORAGE_BACKEND=s3",
		"S3_ENDPOINT_URL=http://127.0.0.1:1", "S3_ACCESS_KEY_ID=k", "S3_SECRET_ACCESS_KEY=s", "S3_BUCKET_NAME=bucket")
	if out, errOut, code := proctest.Run(t, env, "migrate"); code != 0 {
		t.Fatalf("migrate: %s %s", out, errOut)
	}
	_, errOut, code = proctest.Run(t, env, "migrate-to-s3")
	if code != 1 || !strings.Contains(errOut, "object storage is not reachable") {
		t.Fatalf("store down: %d %s", code, errOut)
	}
}
