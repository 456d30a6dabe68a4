package main

// This file is what sqlc generates for the queries below (sqlc's
// "emit_interface: false" defaults, database/sql driver), written by hand
// so that the example builds without sqlc. With sqlc, it would be
// db.go + models.go + notes.sql.go, and New(balancer.SQL()) would not
// change.
//
//	-- name: CreateNote :one
//	INSERT INTO notes (user_id, body) VALUES ($1, $2)
//	RETURNING id, user_id, body, created_at;
//
//	-- name: ListNotes :many
//	SELECT id, user_id, body, created_at FROM notes
//	WHERE user_id = $1 ORDER BY id DESC LIMIT $2;

import (
	"context"
	"database/sql"
	"time"
)

// DBTX is the interface sqlc generates. *sql.DB, *sql.Tx and the
// balancer's *ryw.DB (balancer.SQL()) all satisfy it.
type DBTX interface {
	ExecContext(context.Context, string, ...interface{}) (sql.Result, error)
	PrepareContext(context.Context, string) (*sql.Stmt, error)
	QueryContext(context.Context, string, ...interface{}) (*sql.Rows, error)
	QueryRowContext(context.Context, string, ...interface{}) *sql.Row
}

func New(db DBTX) *Queries {
	return &Queries{db: db}
}

type Queries struct {
	db DBTX
}

func (q *Queries) WithTx(tx *sql.Tx) *Queries {
	return &Queries{
		db: tx,
	}
}

type Note struct {
	ID        int64     `json:"id"`
	UserID    string    `json:"userId"`
	Body      string    `json:"body"`
	CreatedAt time.Time `json:"createdAt"`
}

const createNote = `-- name: CreateNote :one
INSERT INTO notes (user_id, body) VALUES ($1, $2)
RETURNING id, user_id, body, created_at
`

type CreateNoteParams struct {
	UserID string
	Body   string
}

func (q *Queries) CreateNote(ctx context.Context, arg CreateNoteParams) (Note, error) {
	row := q.db.QueryRowContext(ctx, createNote, arg.UserID, arg.Body)
	var i Note
	err := row.Scan(
		&i.ID,
		&i.UserID,
		&i.Body,
		&i.CreatedAt,
	)
	return i, err
}

const listNotes = `-- name: ListNotes :many
SELECT id, user_id, body, created_at FROM notes
WHERE user_id = $1 ORDER BY id DESC LIMIT $2
`

type ListNotesParams struct {
	UserID string
	Limit  int32
}

func (q *Queries) ListNotes(ctx context.Context, arg ListNotesParams) ([]Note, error) {
	rows, err := q.db.QueryContext(ctx, listNotes, arg.UserID, arg.Limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var items []Note
	for rows.Next() {
		var i Note
		if err := rows.Scan(
			&i.ID,
			&i.UserID,
			&i.Body,
			&i.CreatedAt,
		); err != nil {
			return nil, err
		}
		items = append(items, i)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return items, nil
}
