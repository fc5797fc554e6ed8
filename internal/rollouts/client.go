package rollouts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Client drives a running service's rollout API (`iotsupport rollout …`): scripts need
// only its URL and an editor token, and every change goes through the server (audit,
// device notifications) as from any other client.
type Client struct {
	URL, Token string
	HTTP       *http.Client
}

// ParseStages reads "5:720,25:720,100": percent[:min_minutes] per stage.
func ParseStages(s string) ([]Stage, error) {
	var out []Stage
	for _, part := range strings.Split(s, ",") {
		p, m, _ := strings.Cut(strings.TrimSpace(part), ":")
		pct, err := strconv.Atoi(p)
		if err != nil {
			return nil, fmt.Errorf("stage %q: percent must be a number", part)
		}
		st := Stage{Percent: pct}
		if m != "" {
			if st.MinMinutes, err = strconv.Atoi(m); err != nil {
				return nil, fmt.Errorf("stage %q: min_minutes must be a number", part)
			}
		}
		out = append(out, st)
	}
	return out, nil
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.URL, "/")+path, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var env struct {
			Error string `json:"error"`
			Code  string `json:"code"`
		}
		if json.Unmarshal(b, &env) == nil && env.Error != "" {
			return fmt.Errorf("%s %s: %d %s: %s", method, path, resp.StatusCode, env.Code, env.Error)
		}
		return fmt.Errorf("%s %s: %d", method, path, resp.StatusCode)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// Start starts a rollout of a model.
func (c *Client) Start(ctx context.Context, modelID int64, in Input) (*Rollout, error) {
	var r Rollout
	return &r, c.do(ctx, http.MethodPost, fmt.Sprintf("/api/device-models/%d/rollouts", modelID), in, &r)
}

// Status returns a rollout with its figures; id 0 is the model's latest rollout.
func (c *Client) Status(ctx context.Context, modelID, id int64) (*Status, error) {
	if id == 0 {
		var list struct {
			Rollouts []*Rollout `json:"rollouts"`
		}
		if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/device-models/%d/rollouts", modelID), nil, &list); err != nil {
			return nil, err
		}
		if len(list.Rollouts) == 0 {
			return nil, fmt.Errorf("model %d has no rollout", modelID)
		}
		id = list.Rollouts[0].ID
	}
	var st Status
	return &st, c.do(ctx, http.MethodGet, fmt.Sprintf("/api/device-models/%d/rollouts/%d", modelID, id), nil, &st)
}

// Action runs advance, pause, resume, abort or complete.
func (c *Client) Action(ctx context.Context, modelID, id int64, action string) (*Rollout, error) {
	var r Rollout
	return &r, c.do(ctx, http.MethodPost, fmt.Sprintf("/api/device-models/%d/rollouts/%d/%s", modelID, id, action), nil, &r)
}
