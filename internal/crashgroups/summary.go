package crashgroups

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/db"
)

// Sparklines returns, for each of the groups ids (a list page), its dumps on each of the
// last DailyDays days (UTC), oldest first: one grouped query for the whole page.
func (s *Service) Sparklines(ctx context.Context, ids []int64) (map[int64][]int64, error) {
	out := make(map[int64][]int64, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	first := s.now().UTC().AddDate(0, 0, -(DailyDays - 1))
	args := []any{first.Format(time.DateOnly)}
	marks := make([]string, len(ids))
	for i, id := range ids {
		out[id] = make([]int64, DailyDays)
		args = append(args, id)
		marks[i] = fmt.Sprintf("$%d", len(args))
	}
	rows, err := s.db.QueryContext(ctx, `SELECT group_id, day, SUM(dumps) FROM crash_group_daily
		WHERE day >= $1 AND group_id IN (`+strings.Join(marks, ", ")+`) GROUP BY group_id, day`, args...)
	if err != nil {
		return nil, db.Err("crash group sparklines", err)
	}
	defer rows.Close()
	start, _ := time.Parse(time.DateOnly, first.Format(time.DateOnly))
	for rows.Next() {
		var id, n int64
		var day string
		if err := rows.Scan(&id, &day, &n); err != nil {
			return nil, db.Err("crash group sparklines", err)
		}
		d, err := time.Parse(time.DateOnly, day)
		if err != nil {
			continue
		}
		if i := int(d.Sub(start).Hours() / 24); i >= 0 && i < DailyDays && out[id] != nil {
			out[id][i] = n
		}
	}
	return out, db.Err("crash group sparklines", rows.Err())
}

// TopOpen returns each model's open groups with the most devices, at most perModel of
// each (the console's overview): one query whatever the number of models.
func (s *Service) TopOpen(ctx context.Context, perModel int) (map[int64][]*Group, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+groupColumns+` FROM (
			SELECT id, ROW_NUMBER() OVER (PARTITION BY model_id ORDER BY device_count DESC, id DESC) AS n
			FROM crash_groups WHERE status = $1) r
		JOIN crash_groups g ON g.id = r.id WHERE r.n <= $2 ORDER BY g.model_id, r.n`, StatusOpen, perModel)
	if err != nil {
		return nil, db.Err("top crash groups", err)
	}
	defer rows.Close()
	out := map[int64][]*Group{}
	for rows.Next() {
		g, err := scanGroup(rows)
		if err != nil {
			return nil, db.Err("top crash groups", err)
		}
		out[g.ModelID] = append(out[g.ModelID], g)
	}
	return out, db.Err("top crash groups", rows.Err())
}
