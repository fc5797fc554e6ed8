// Package apperr holds the typed errors services return and the HTTP API maps to
// statuses and error codes in one place.
package apperr

import (
	"errors"
	"fmt"
)

// Kind classifies an error for the API.
type Kind int

const (
	Internal Kind = iota
	NotFound
	Exists
	InvalidOperation
	Validation
	Unavailable
	TooLarge
	RateLimited
	Unauthenticated
	Forbidden
)

// Error is a classified error with a human message safe to show to clients.
type Error struct {
	Kind Kind
	Msg  string
	Err  error // cause, for logs
	// RetryAfterSeconds is set on RateLimited errors.
	RetryAfterSeconds int
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

func newf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// NotFoundf: 404 RECORD_NOT_FOUND.
func NotFoundf(format string, args ...any) *Error { return newf(NotFound, format, args...) }

// Existsf: 409 RECORD_EXISTS.
func Existsf(format string, args ...any) *Error { return newf(Exists, format, args...) }

// InvalidOperationf: 409 INVALID_OPERATION; the message reads "Cannot X because Y".
func InvalidOperationf(format string, args ...any) *Error {
	return newf(InvalidOperation, format, args...)
}

// Validationf: 400 VALIDATION_FAILED.
func Validationf(format string, args ...any) *Error { return newf(Validation, format, args...) }

// TooLargef: 413 PAYLOAD_TOO_LARGE.
func TooLargef(format string, args ...any) *Error { return newf(TooLarge, format, args...) }

// Unavailable wraps a dependency outage: 503 SERVICE_UNAVAILABLE.
func UnavailableErr(what string, cause error) *Error {
	return &Error{Kind: Unavailable, Msg: what + " is unavailable", Err: cause}
}

// KindOf returns the kind of err, Internal when it is not an *Error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}
