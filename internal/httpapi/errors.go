package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/iotsupport/iotsupport/internal/apperr"
)

// Envelope is the one error shape of the API (README, "Errors").
type Envelope struct {
	status        int
	headers       http.Header
	cause         error
	Message       string  `json:"error"`
	Details       Details `json:"details"`
	Code          string  `json:"code,omitempty"`
	CorrelationID string  `json:"correlationId"`
}

// Details carries a generic sentence and, for validation failures, the field errors.
type Details struct {
	Message string        `json:"message"`
	Errors  []FieldErrors `json:"errors,omitempty"`
}

// FieldErrors is one request-validation failure.
type FieldErrors struct {
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

func (e *Envelope) Error() string             { return e.Message }
func (e *Envelope) GetStatus() int            { return e.status }
func (e *Envelope) GetHeaders() http.Header   { return e.headers }
func (e *Envelope) ContentType(string) string { return "application/json" }

var genericMessages = map[string]string{
	"AUTHENTICATION_REQUIRED": "Authentication is required to access this resource",
	"AUTHORIZATION_FAILED":    "You do not have permission to perform this operation",
	"RECORD_NOT_FOUND":        "The requested resource could not be found",
	"RECORD_EXISTS":           "A resource with those identifiers already exists",
	"INVALID_OPERATION":       "The requested operation cannot be performed",
	"VALIDATION_FAILED":       "Validation failed",
	"SERVICE_UNAVAILABLE":     "A required service is temporarily unavailable",
	"PAYLOAD_TOO_LARGE":       "The request body exceeds the allowed size",
	"RATE_LIMITED":            "Too many requests; retry later",
	"ROUTE_NOT_AVAILABLE":     "Testing endpoints require APP_ENV=testing",
	"METHOD_NOT_ALLOWED":      "The method is not allowed for this resource",
	"NOT_ACCEPTABLE":          "The requested content type cannot be produced",
	"UNSUPPORTED_MEDIA_TYPE":  "The request body's content type is not supported",
	"REQUEST_FAILED":          "The request could not be processed",
	"PROCESSING_ERROR":        "An internal error occurred",
	"RANGE_NOT_SATISFIABLE":   "The requested range is outside the object",
	"CLIENT_CLOSED_REQUEST":   "The client closed the request",
}

func statusCode(status int) string {
	switch status {
	case 400, 422:
		return "VALIDATION_FAILED"
	case 401:
		return "AUTHENTICATION_REQUIRED"
	case 403:
		return "AUTHORIZATION_FAILED"
	case 404:
		return "RECORD_NOT_FOUND"
	case 405:
		return "METHOD_NOT_ALLOWED"
	case 406:
		return "NOT_ACCEPTABLE"
	case 409:
		return "RECORD_EXISTS"
	case 413:
		return "PAYLOAD_TOO_LARGE"
	case 429:
		return "RATE_LIMITED"
	case 415:
		return "UNSUPPORTED_MEDIA_TYPE"
	case 503:
		return "SERVICE_UNAVAILABLE"
	}
	if status >= 500 {
		return "PROCESSING_ERROR"
	}
	return "REQUEST_FAILED"
}

// newEnvelope builds the envelope for a status, message and optional cause.
func newEnvelope(ctx context.Context, status int, code, msg string) *Envelope {
	if code == "" {
		code = statusCode(status)
	}
	generic := genericMessages[code]
	if generic == "" {
		generic = "An internal error occurred"
	}
	return &Envelope{status: status, Message: msg, Code: code, CorrelationID: requestID(ctx),
		Details: Details{Message: generic}}
}

// fromError maps any error to the envelope: typed service errors keep their message,
// anything else is a logged 500 that reveals nothing internal.
func fromError(ctx context.Context, err error) *Envelope {
	var env *Envelope
	if errors.As(err, &env) {
		return env
	}
	var ae *apperr.Error
	if errors.As(err, &ae) {
		var status int
		var code string
		switch ae.Kind {
		case apperr.NotFound:
			status, code = 404, "RECORD_NOT_FOUND"
		case apperr.Exists:
			status, code = 409, "RECORD_EXISTS"
		case apperr.InvalidOperation:
			status, code = 409, "INVALID_OPERATION"
		case apperr.Validation:
			status, code = 400, "VALIDATION_FAILED"
		case apperr.Unavailable:
			status, code = 503, "SERVICE_UNAVAILABLE"
			loggerFrom(ctx).Warn("dependency unavailable", "error", err.Error())
		case apperr.TooLarge:
			status, code = 413, "PAYLOAD_TOO_LARGE"
		case apperr.RateLimited:
			status, code = 429, "RATE_LIMITED"
		case apperr.Unauthenticated:
			status, code = 401, "AUTHENTICATION_REQUIRED"
		case apperr.Forbidden:
			status, code = 403, "AUTHORIZATION_FAILED"
		default:
			return internalError(ctx, err)
		}
		e := newEnvelope(ctx, status, code, ae.Msg)
		if ae.RetryAfterSeconds > 0 {
			e.headers = http.Header{"Retry-After": {strconv.Itoa(ae.RetryAfterSeconds)}}
		}
		if status == 401 {
			e.headers = http.Header{"WWW-Authenticate": {`Bearer realm="iotsupport", Basic realm="iotsupport-devices"`}}
		}
		return e
	}
	if errors.Is(err, context.Canceled) {
		return newEnvelope(ctx, 499, "CLIENT_CLOSED_REQUEST", "Client closed the request")
	}
	return internalError(ctx, err)
}

func internalError(ctx context.Context, err error) *Envelope {
	loggerFrom(ctx).Error("internal error", "error", err)
	e := newEnvelope(ctx, 500, "PROCESSING_ERROR", "Internal server error")
	e.cause = err
	return e
}

func init() {
	// huma reports its own errors (request validation, body parsing, handler errors)
	// through these hooks; route them all into our single envelope.
	huma.NewErrorWithContext = func(hctx huma.Context, status int, msg string, errs ...error) huma.StatusError {
		ctx := context.Background()
		if hctx != nil {
			ctx = hctx.Context()
		}
		if status == http.StatusInternalServerError {
			for _, e := range errs {
				if e != nil {
					return fromError(ctx, e)
				}
			}
		}
		if status >= 400 && status < 500 {
			if status == http.StatusUnprocessableEntity {
				status = http.StatusBadRequest
			}
			if onlyPathErrors(errs) {
				// /api/device-models/abc names no resource: 404 like an unknown route, as
				// the older service (integer route converters) answered.
				return newEnvelope(ctx, http.StatusNotFound, "RECORD_NOT_FOUND", "Resource not found")
			}
			env := newEnvelope(ctx, status, "", humanize(msg))
			for _, e := range errs {
				if e == nil {
					continue
				}
				var d *huma.ErrorDetail
				if errors.As(e, &d) {
					env.Details.Errors = append(env.Details.Errors, FieldErrors{Message: d.Message, Field: strings.TrimPrefix(strings.TrimPrefix(d.Location, "body."), "path.")})
				} else {
					env.Details.Errors = append(env.Details.Errors, FieldErrors{Message: e.Error()})
				}
			}
			if len(env.Details.Errors) > 0 && env.Code == "VALIDATION_FAILED" {
				env.Message = "Validation failed: " + env.Details.Errors[0].fieldText()
			}
			return env
		}
		return newEnvelope(ctx, status, "", humanize(msg))
	}
	huma.NewError = func(status int, msg string, errs ...error) huma.StatusError {
		return huma.NewErrorWithContext(nil, status, msg, errs...)
	}
}

// onlyPathErrors reports whether every validation error is about a path parameter.
func onlyPathErrors(errs []error) bool {
	n := 0
	for _, e := range errs {
		if e == nil {
			continue
		}
		var d *huma.ErrorDetail
		if !errors.As(e, &d) || !strings.HasPrefix(d.Location, "path.") {
			return false
		}
		n++
	}
	return n > 0
}

func (f FieldErrors) fieldText() string {
	if f.Field == "" {
		return f.Message
	}
	return f.Field + ": " + f.Message
}

func humanize(msg string) string {
	if msg == "" {
		return "Request failed"
	}
	return strings.ToUpper(msg[:1]) + msg[1:]
}

// writeError writes err as the envelope from a plain (non-huma) handler.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	writeEnvelope(w, fromError(r.Context(), err))
}

func writeEnvelope(w http.ResponseWriter, env *Envelope) {
	for k, vs := range env.headers {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(env.status)
	_ = json.NewEncoder(w).Encode(env)
}

// loggerFrom is the request's logger: the server's, with the request's id.
func loggerFrom(ctx context.Context) *slog.Logger {
	l := serverLogger(ctx)
	if id := requestID(ctx); id != "" {
		return l.With("request_id", id)
	}
	return l
}

// serverLogger is the server's logger, without the request's id.
func serverLogger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}
