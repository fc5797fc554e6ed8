package devices

import (
	"context"
	"fmt"
	"strings"

	"github.com/iotsupport/iotsupport/internal/db"
)

// PageFilter selects one page of devices for the web console: by model, active state
// and a search over key and name, ordered by key.
type PageFilter struct {
	ModelID int64
	// Active is nil for every device, else only active (true) or inactive (false) ones.
	Active *bool
	// Search matches a substring of the key or (case-insensitively) the name.
	Search        string
	Limit, Offset int
}

// FindDevicePage returns one page of the devices matching f and how many match in all.
// Only the page's rows are read (and their last core dump looked up), so a page costs
// the same with ten devices or ten thousand.
func (s *Service) FindDevicePage(ctx context.Context, f PageFilter) ([]*Device, int, error) {
	where := ` WHERE 1 = 1`
	var args []any
	if f.ModelID != 0 {
		args = append(args, f.ModelID)
		where += fmt.Sprintf(` AND d.device_model_id = $%d`, len(args))
	}
	if f.Active != nil {
		args = append(args, *f.Active)
		where += fmt.Sprintf(` AND d.active = $%d`, len(args))
	}
	if q := strings.ToLower(strings.TrimSpace(f.Search)); q != "" {
		esc := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(q)
		args = append(args, "%"+esc+"%")
		where += fmt.Sprintf(` AND (d.key LIKE $%d ESCAPE '\' OR LOWER(d.device_name) LIKE $%d ESCAPE '\')`, len(args), len(args))
	}
	var total int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM devices d`+where, args...).Scan(&total); err != nil {
		return nil, 0, db.Err("count devices", err)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	args = append(args, limit, max(f.Offset, 0))
	rows, err := s.db.QueryContext(ctx, `SELECT `+deviceColumns+deviceFrom+where+
		fmt.Sprintf(` ORDER BY d.key LIMIT $%d OFFSET $%d`, len(args)-1, len(args)), args...)
	if err != nil {
		return nil, 0, db.Err("list devices", err)
	}
	defer rows.Close()
	out := []*Device{}
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, 0, db.Err("list devices", err)
		}
		out = append(out, d)
	}
	return out, total, db.Err("list devices", rows.Err())
}
