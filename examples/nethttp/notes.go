package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"unicode/utf8"
)

// userHeader names the caller. It is not verified: a real service reads a
// session cookie or a bearer token in userID.
const userHeader = "X-User-Id"

var userIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// userID names the caller: the user whose writes their reads must show.
// An error refuses the request with 401.
func userID(r *http.Request) (string, error) {
	id := r.Header.Get(userHeader)
	if !userIDPattern.MatchString(id) {
		return "", fmt.Errorf("send %s: 1 to 64 letters, digits, - or _", userHeader)
	}
	return id, nil
}

// Limits of the API.
const (
	maxNoteRunes   = 1000
	maxRequestBody = 16 << 10
	listLimit      = 50
)

// notes are the HTTP handlers. They run their queries with the request's
// context, which carries where its reads go.
type notes struct {
	q      *Queries
	logger *slog.Logger
}

func (h *notes) create(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Body string `json:"body"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody)).Decode(&in); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", `the body must be JSON like {"body": "buy milk"}`)
		return
	}
	if n := utf8.RuneCountInString(in.Body); n == 0 || n > maxNoteRunes {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("body must be 1 to %d characters", maxNoteRunes))
		return
	}
	user, _ := userID(r) // the middleware has checked it
	note, err := h.q.CreateNote(r.Context(), CreateNoteParams{UserID: user, Body: in.Body})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, note)
}

// mine lists the caller's notes: the one they just saved included.
func (h *notes) mine(w http.ResponseWriter, r *http.Request) {
	user, _ := userID(r)
	h.list(w, r, user)
}

// theirs lists anyone's notes, as a replica has them.
func (h *notes) theirs(w http.ResponseWriter, r *http.Request) {
	h.list(w, r, r.PathValue("id"))
}

func (h *notes) list(w http.ResponseWriter, r *http.Request, user string) {
	list, err := h.q.ListNotes(r.Context(), ListNotesParams{UserID: user, Limit: listLimit})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if list == nil {
		list = []Note{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"notes": list})
}

// fail answers a failed query: the client sees a stable code, the log the
// cause.
func (h *notes) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.DeadlineExceeded) {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the database did not answer in time; try again")
		return
	}
	h.logger.ErrorContext(r.Context(), "query failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal", "internal error")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers {"error": {"code": ..., "message": ...}}, the shape
// ryw's middleware answers its own refusals with (401, 400, 503).
func writeError(w http.ResponseWriter, status int, code, message string) {
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	body.Error.Code, body.Error.Message = code, message
	writeJSON(w, status, body)
}
