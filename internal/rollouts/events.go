package rollouts

import (
	"context"
	"database/sql"

	"github.com/iotsupport/iotsupport/internal/notify"
)

// Event is a rollout's change as published on MQTT (notify.TopicRollouts) and POSTed
// to WEBHOOK_URL: started, advanced, paused, resumed, halted, aborted, completed.
type Event struct {
	Event     string `json:"event"`
	RolloutID int64  `json:"rollout_id"`
	Model     string `json:"model"`
	Version   string `json:"version"`
	State     string `json:"state"`
	Stage     int    `json:"stage"`
	Percent   int    `json:"percent"`
	Reason    string `json:"reason,omitempty"`
}

// Events queues an event's durable deliveries in the change's transaction
// (crashgroups.Service, which delivers crash group events the same way).
type Events interface {
	QueueEventTx(ctx context.Context, tx *sql.Tx, topic string, event any) error
}

// eventOf names the change from before to after ("" when there is none to tell).
func eventOf(before, after *Rollout) string {
	switch {
	case before == nil:
		return "started"
	case before.State != after.State && after.State == Active:
		return "resumed"
	case before.State != after.State:
		return after.State
	case before.Stage != after.Stage:
		return "advanced"
	}
	return ""
}

func (s *Service) queueEvent(ctx context.Context, tx *sql.Tx, before, after *Rollout) error {
	name := eventOf(before, after)
	if name == "" {
		return nil
	}
	var code string
	if err := tx.QueryRowContext(ctx, `SELECT code FROM device_models WHERE id = $1`, after.ModelID).Scan(&code); err != nil {
		return err
	}
	return s.events.QueueEventTx(ctx, tx, notify.TopicRollouts, Event{Event: name, RolloutID: after.ID, Model: code, Version: after.Version,
		State: after.State, Stage: after.Stage, Percent: after.Percent, Reason: after.Reason})
}
