package ryw

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// The settle waits settleWait for the transactions that were running,
// and for committed ones at most half of what is left of the read's
// deadline (settleMax without one), never longer in all than that half.
func TestSettleArgs(t *testing.T) {
	ms := func(args [][]byte) (wait, most int) {
		wait, _ = strconv.Atoi(string(args[0]))
		most, _ = strconv.Atoi(string(args[1]))
		return wait, most
	}
	if wait, most := ms(settleArgs(context.Background())); wait != 20 || most != 2500 {
		t.Errorf("no deadline: waits %d ms, at most %d ms; want 20 and 2500", wait, most)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	if wait, most := ms(settleArgs(ctx)); wait != 20 || most < 2990 || most > 3000 {
		t.Errorf("6 s left: waits %d ms, at most %d ms; want 20 and 3000", wait, most)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	if wait, most := ms(settleArgs(short)); wait > 5 || most > 5 {
		t.Errorf("10 ms left: waits %d ms, at most %d ms; want both 5 or less", wait, most)
	}
}

// The settle's failure, and only it, is ErrUnsettled, naming the
// transactions; the API answers it 503 unsettled.
func TestSettleError(t *testing.T) {
	failed := &pgconn.PgError{Code: "22P02", Message: `invalid input syntax for type pg_lsn: "` + unsettledPrefix + `{748,754}"`}
	err := settleError(fmt.Errorf("query: %w", failed))
	if !errors.Is(err, ErrUnsettled) || !strings.Contains(err.Error(), "{748,754}") {
		t.Errorf("settleError = %v; want ErrUnsettled naming {748,754}", err)
	}
	for _, other := range []error{
		&pgconn.PgError{Code: "22P02", Message: `invalid input syntax for type pg_lsn: "` + behindPrefix + `0/3000000"`},
		&pgconn.PgError{Code: "57014", Message: "canceling statement due to statement timeout"},
		errors.New("unexpected EOF"),
	} {
		if err := settleError(other); err != nil {
			t.Errorf("settleError(%v) = %v; want nil", other, err)
		}
	}
	if status, code, _ := ErrorStatus(fmt.Errorf("retry on the primary after replica1 failed: %w", err)); status != http.StatusServiceUnavailable || code != "unsettled" {
		t.Errorf("ErrorStatus = %d %s; want 503 unsettled", status, code)
	}
}

// A read on the primary settles once the client has read from a replica;
// a settle clears only the marks made before it started.
func TestObservationSettles(t *testing.T) {
	o := &Observation{}
	if must, _ := o.settling(); must {
		t.Fatal("a fresh request settles; want none before a replica read")
	}
	o.mustSettle()
	must, gen := o.settling()
	if !must {
		t.Fatal("after a replica read: no settle")
	}
	o.mustSettle() // a replica read while the settle ran
	o.settled(gen)
	if must, gen = o.settling(); !must {
		t.Fatal("a replica read during the settle was cleared by it")
	}
	o.settled(gen)
	if must, _ := o.settling(); must {
		t.Error("still settling after a settle with no replica read since")
	}
	var none *Observation
	none.mustSettle()
	if must, _ := none.settling(); must {
		t.Error("a read without an observation settles")
	}
}
