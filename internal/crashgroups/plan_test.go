package crashgroups

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/testenv"
)

// TestListStaysOnIndexWith10000Groups: PostgreSQL's plan for listing a model's groups,
// with 10 000 groups of that model among 20 000, reads an index in each sort order and
// for the next page, never the whole table.
func TestListStaysOnIndexWith10000Groups(t *testing.T) {
	ctx := context.Background()
	d := testenv.OpenDB(t, testenv.PostgresURL(t))
	s := &Service{db: d, opts: Options{BackfillBatch: 100}, now: func() time.Time { return time.Now().UTC() }}
	testenv.MustExec(t, d, `INSERT INTO device_models (code, name, created_at, updated_at) VALUES ('lamp', 'Lamp', now(), now()), ('fan', 'Fan', now(), now())`)
	testenv.MustExec(t, d, `INSERT INTO crash_groups (model_id, fingerprint, grouping_version, title, fault, culprit, first_seen_at, last_seen_at,
		dump_count, device_count, first_version, last_version, status, created_at, updated_at)
		SELECT 1 + i % 2, md5(i::text) || md5((i + 1)::text), 1, 'crash ' || i, 'abort()', '', now() - i * interval '1 minute', now() - (i % 977) * interval '1 second',
			i % 113, i % 37, '1.0.' || (i % 5), '1.0.' || (i % 5), CASE WHEN i % 3 = 0 THEN 'resolved' ELSE 'open' END, now(), now()
		FROM generate_series(1, 20000) AS i`)
	testenv.MustExec(t, d, `ANALYZE crash_groups`)
	for _, f := range []Filter{
		{ModelID: 1, Sort: "last_seen", Limit: 100},
		{ModelID: 1, Sort: "devices", Limit: 100},
		{ModelID: 1, Sort: "dumps", Limit: 100},
		{ModelID: 1, Sort: "last_seen", Limit: 100, Status: StatusOpen},
		{ModelID: 1, Sort: "devices", Limit: 100, BeforeID: 5001},
		{Sort: "last_seen", Limit: 100},
	} {
		q, args, err := s.listQuery(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		plan := explain(t, s, q, args)
		if strings.Contains(plan, "Seq Scan on crash_groups") || !strings.Contains(plan, "Index Scan") || strings.Contains(plan, "Sort  (") {
			t.Errorf("%+v: the page is not read in index order:\n%s", f, plan)
		}
	}
}

func explain(t *testing.T, s *Service, q string, args []any) string {
	t.Helper()
	rows, err := s.db.QueryContext(context.Background(), "EXPLAIN "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}
