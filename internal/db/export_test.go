package db

import "time"

// SetGateWait shortens how long Tx waits for its turn.
func (d *DB) SetGateWait(w time.Duration) { d.gateWait = w }
