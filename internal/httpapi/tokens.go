package httpapi

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/iotsupport/iotsupport/internal/auth"
)

type tokenList struct {
	Body struct {
		Tokens []auth.Token `json:"tokens"`
		Count  int          `json:"count"`
	}
}

// CreatedToken is a new token with its secret, returned once.
type CreatedToken struct {
	ID     int64  `json:"id"`
	Name   string `json:"name"`
	Role   string `json:"role"`
	Secret string `json:"token" doc:"The secret; shown only in this response"`
}

type createdToken struct{ Body CreatedToken }

type auditList struct {
	Body struct {
		Entries []auth.AuditEntry `json:"entries"`
		Count   int               `json:"count" doc:"Total number of entries"`
	}
}

func (s *Server) registerTokens() {
	tags := []string{"Access"}
	huma.Register(s.api, listOp(huma.Operation{OperationID: "list-tokens", Method: http.MethodGet, Path: "/api/tokens",
		Summary: "List API tokens (never their secrets)", Tags: tags}),
		func(ctx context.Context, _ *struct{}) (*tokenList, error) {
			ts, err := s.deps.Tokens.List(ctx)
			if err != nil {
				return nil, err
			}
			out := &tokenList{}
			out.Body.Tokens, out.Body.Count = ts, len(ts)
			return out, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "create-token", Method: http.MethodPost, Path: "/api/tokens",
		Summary: "Create an API token", Tags: tags, DefaultStatus: 201},
		func(ctx context.Context, in *struct {
			Body struct {
				Name string `json:"name" minLength:"1" maxLength:"100"`
				Role string `json:"role" enum:"viewer,editor,admin,pipeline"`
			}
		}) (*createdToken, error) {
			t, secret, err := s.deps.Tokens.Create(ctx, in.Body.Name, in.Body.Role)
			if err != nil {
				return nil, err
			}
			out := &createdToken{}
			out.Body = CreatedToken{ID: t.ID, Name: t.Name, Role: t.Role, Secret: secret}
			return out, nil
		})
	// Ids and names have separate paths: "DELETE /api/tokens/8" must never also revoke a token named "8".
	huma.Register(s.api, huma.Operation{OperationID: "revoke-token", Method: http.MethodDelete, Path: "/api/tokens/{token_id}",
		Summary: "Revoke an API token by id", Tags: tags, DefaultStatus: 204},
		func(ctx context.Context, in *struct {
			TokenID int64 `path:"token_id" minimum:"1" doc:"Token id"`
		}) (*struct{}, error) {
			return nil, s.deps.Tokens.RevokeByID(ctx, in.TokenID)
		})
	huma.Register(s.api, huma.Operation{OperationID: "revoke-token-by-name", Method: http.MethodDelete, Path: "/api/tokens/by-name/{name}",
		Summary: "Revoke an API token by name", Description: "Percent-encode the name: `ci/main` is `/api/tokens/by-name/ci%2Fmain`.",
		Tags: tags, DefaultStatus: 204},
		func(ctx context.Context, in *struct {
			Name string `path:"name" doc:"Token name, percent-encoded"`
		}) (*struct{}, error) {
			return nil, s.deps.Tokens.RevokeByName(ctx, in.Name)
		})
	huma.Register(s.api, listOp(huma.Operation{OperationID: "list-audit", Method: http.MethodGet, Path: "/api/audit",
		Summary: "Audit log of writes, newest first", Tags: tags}),
		func(ctx context.Context, in *struct {
			Limit    int   `query:"limit" minimum:"1" maximum:"1000" default:"100"`
			BeforeID int64 `query:"before_id" minimum:"0"`
		}) (*auditList, error) {
			es, total, err := s.deps.Audit.List(ctx, in.Limit, in.BeforeID)
			if err != nil {
				return nil, err
			}
			out := &auditList{}
			out.Body.Entries, out.Body.Count = es, total
			return out, nil
		})
}
