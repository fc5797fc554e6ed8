package devices

import (
	"context"
	"fmt"

	"github.com/iotsupport/iotsupport/internal/db"
)

// FindDevicePage returns one page of the devices matching f (by key, limit rows after
// offset) and how many match in all. Only the page's rows are read (and their last core
// dump looked up), so a page costs the same with ten devices or ten thousand.
func (s *Service) FindDevicePage(ctx context.Context, f DeviceFilter, limit, offset int) ([]*Device, int, error) {
	where, args, err := f.where()
	if err != nil {
		return nil, 0, err
	}
	var total int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*)`+deviceFrom+where, args...).Scan(&total); err != nil {
		return nil, 0, db.Err("count devices", err)
	}
	if limit <= 0 {
		limit = 50
	}
	args = append(args, limit, max(offset, 0))
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
