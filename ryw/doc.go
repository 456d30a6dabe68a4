// Package ryw is the read-your-writes core: it decides, per request, which
// PostgreSQL node may serve a user's reads so that the user always sees their
// own writes, while every other read is offloaded to streaming replicas.
//
// It depends on GORM, dbresolver and go-redis only, never on a web framework
// or on the application that embeds it.
package ryw
