/*
 * A timer wheel for one worker: O(1) arm, disarm and per-tick expiry, no
 * allocation (timers are embedded in their owners). Deadlines farther than
 * one turn of the wheel stay in their slot and are looked at once per turn.
 * Private to the worker part.
 */
#ifndef BEACON_TIMER_H
#define BEACON_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#define TIMER_TICK_MS 10
#define TIMER_SLOTS 512

struct timer;
typedef void (*timer_fn)(struct timer *t);

struct timer {
	uint64_t deadline_ms;
	timer_fn fire;
	struct timer *next, **pprev; /* pprev NULL when not armed */
};

struct timer_wheel {
	uint64_t now_ms; /* the last tick processed */
	struct timer *slot[TIMER_SLOTS];
};

void timer_wheel_init(struct timer_wheel *w, uint64_t now_ms);
void timer_arm(struct timer_wheel *w, struct timer *t, uint64_t deadline_ms, timer_fn fire);
void timer_disarm(struct timer *t);
/* Fires every timer due at or before now_ms. */
void timer_wheel_advance(struct timer_wheel *w, uint64_t now_ms);

/* Monotonic milliseconds. */
uint64_t clock_ms(void);
uint64_t clock_us(void);

#endif
