package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/ryw-go/ryw/middleware"
	"github.com/ryw-go/ryw/ryw"
	"github.com/ryw-go/ryw/services"
)

// ErrorBody is the one error shape every endpoint answers with.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is a stable machine-readable code and a message for people.
type ErrorDetail struct {
	Code    string `json:"code" example:"bad_request"`
	Message string `json:"message" example:"email must be a valid address"`
}

// httpError is an error that already knows how it is shown to a client.
type httpError struct {
	status  int
	code    string
	message string
}

func (e *httpError) Error() string { return e.message }

func errorf(status int, code, format string, args ...any) error {
	return &httpError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// errInternal is what a client sees of any error not in the table: the
// cause goes to the log with the request id, never to the client.
var errInternal = &httpError{status: http.StatusInternalServerError, code: "internal", message: "internal error; quote the X-Request-Id header when reporting it"}

// errUnavailable is shown when a database node the request needs is down:
// the request may succeed if retried.
var errUnavailable = &httpError{status: http.StatusServiceUnavailable, code: "unavailable", message: "the database is unavailable; try again shortly"}

// errUnconfirmed is a write that committed but could not be secured for
// read-your-writes (Redis and the primary both failed it): the client must
// know, and may retry, since saving a profile is idempotent.
var errUnconfirmed = &httpError{status: http.StatusServiceUnavailable, code: "write_unconfirmed", message: "the change was saved, but the service could not make sure your next reads show it; repeat the request"}

// errTimedOut is a request whose database node did not answer within its
// deadline (RYW_PRIMARY_TIMEOUT): better a prompt 503 than a hang.
var errTimedOut = &httpError{status: http.StatusServiceUnavailable, code: "unavailable", message: "the database did not answer in time; try again shortly"}

// errOverloaded is a read shed under overload (ryw.ErrOverloaded): the
// service, not a node, is the bottleneck, and the client should come back
// after Retry-After.
var errOverloaded = &httpError{status: http.StatusServiceUnavailable, code: "overloaded", message: "the service is overloaded; try again shortly"}

// errUnsettled is a read that the primary could not serve without showing
// the client less than a replica already showed it (ryw.ErrUnsettled).
var errUnsettled = &httpError{status: http.StatusServiceUnavailable, code: "unsettled", message: "the database has not finished making visible a change you have already been shown (a synchronous standby may not be answering); try again shortly"}

// errCanceled is a request whose client went away: nobody reads the answer,
// and it is no fault of the service (499, nginx's "client closed request").
var errCanceled = &httpError{status: 499, code: "canceled", message: "the client closed the request"}

// classify is the one place that decides how an error is shown. Only the
// errors listed here reach the client with their message; any other is an
// internal error, logged and never shown.
func classify(err error) *httpError {
	var (
		he       *httpError
		invalid  *services.ValidationError
		tooLarge *http.MaxBytesError
	)
	switch {
	case errors.As(err, &he):
		return he
	case errors.As(err, &invalid):
		return &httpError{status: http.StatusBadRequest, code: "invalid_input", message: invalid.Message}
	case errors.Is(err, services.ErrProfileNotFound):
		return &httpError{status: http.StatusNotFound, code: "not_found", message: "this user has no profile yet; POST /api/me/profile creates it"}
	case errors.Is(err, middleware.ErrUnauthenticated):
		return &httpError{status: http.StatusUnauthorized, code: "unauthenticated", message: err.Error()}
	case errors.Is(err, middleware.ErrKeysUnavailable):
		return &httpError{status: http.StatusServiceUnavailable, code: "auth_unavailable", message: "the token issuer's keys cannot be fetched to check this token; try again shortly"}
	case errors.Is(err, middleware.ErrModeOverride):
		return &httpError{status: http.StatusBadRequest, code: "mode_override_refused", message: err.Error()}
	case errors.Is(err, middleware.ErrDemoHeaderRefused):
		return &httpError{status: http.StatusBadRequest, code: "demo_identity_refused", message: err.Error()}
	case errors.Is(err, middleware.ErrInvalidUserID):
		return &httpError{status: http.StatusBadRequest, code: "invalid_user_id", message: err.Error()}
	case errors.Is(err, ryw.ErrInvalidToken):
		return &httpError{status: http.StatusBadRequest, code: "invalid_token", message: err.Error()}
	case errors.Is(err, middleware.ErrBodyTooLarge):
		return &httpError{status: http.StatusRequestEntityTooLarge, code: "body_too_large", message: err.Error()}
	case errors.As(err, &tooLarge):
		return &httpError{status: http.StatusRequestEntityTooLarge, code: "body_too_large", message: fmt.Sprintf("request body too large: the limit is %d bytes", tooLarge.Limit)}
	case errors.Is(err, middleware.ErrUnsupportedMediaType):
		return &httpError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type", message: err.Error()}
	case errors.Is(err, ryw.ErrUnconfirmed):
		return errUnconfirmed
	case errors.Is(err, ryw.ErrOverloaded), errors.Is(err, middleware.ErrBusy):
		return errOverloaded
	case errors.Is(err, ryw.ErrUnsettled):
		return errUnsettled
	case errors.Is(err, context.Canceled):
		return errCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return errTimedOut
	case ryw.IsUnavailable(err):
		return errUnavailable
	default:
		return errInternal
	}
}

// Errors renders the last error a handler or middleware attached with
// c.Error, in the JSON error shape, if nothing was written yet. It is the
// outermost middleware, so everything inside it reports errors the same way.
func Errors(logger *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Next()
		if len(c.Errors) == 0 {
			return
		}
		err := c.Errors.Last().Err
		he := classify(err)
		switch {
		case he == errOverloaded:
			// Counted in the metrics (ryw_http_requests_shed_total,
			// ryw_reads_overloaded_total): a log line for each would add
			// work when the service is already the bottleneck.
		case he.status == http.StatusServiceUnavailable:
			logger.WarnContext(c.Request.Context(), "dependency unavailable", "err", err,
				"requestId", middleware.RequestIDFrom(c.Request.Context()),
				"method", c.Request.Method, "path", c.Request.URL.Path)
		case he.status >= 500:
			logger.ErrorContext(c.Request.Context(), "request failed", "err", err,
				"requestId", middleware.RequestIDFrom(c.Request.Context()),
				"method", c.Request.Method, "path", c.Request.URL.Path)
		}
		if c.Writer.Written() {
			return
		}
		if he.status == http.StatusServiceUnavailable {
			// Every 503 here is worth repeating, and none sooner.
			c.Header("Retry-After", "1")
		}
		if he.status == http.StatusUnauthorized {
			// RFC 6750: what the client must send, and why this was refused.
			c.Header("WWW-Authenticate", fmt.Sprintf(`Bearer realm="ryw", error="invalid_token", error_description=%q`, quoteSafe(he.message)))
		}
		c.AbortWithStatusJSON(he.status, ErrorBody{Error: ErrorDetail{Code: he.code, Message: he.message}})
	}
}

// quoteSafe keeps a message inside a quoted-string of a header: no quotes,
// backslashes or control characters (RFC 6750 allows printable ASCII).
func quoteSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '\''
		}
		return r
	}, s)
}

// fail attaches err to the request and stops the chain; Errors renders it.
func fail(c *gin.Context, err error) {
	_ = c.Error(err)
	c.Abort()
}

// recovered turns a panic into a logged internal error instead of a dropped
// connection.
func recovered(c *gin.Context, v any) {
	fail(c, fmt.Errorf("panic: %v", v))
}

func noRoute(c *gin.Context) {
	fail(c, errorf(http.StatusNotFound, "not_found", "no route for %s %s", c.Request.Method, c.Request.URL.Path))
}

func noMethod(c *gin.Context) {
	fail(c, errorf(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed on %s", c.Request.Method, c.Request.URL.Path))
}
