#include "timer.h"

#include <stddef.h>
#include <time.h>

uint64_t clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t clock_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void timer_wheel_init(struct timer_wheel *w, uint64_t now_ms)
{
	*w = (struct timer_wheel){.now_ms = now_ms};
}

static unsigned slot_of(uint64_t ms)
{
	return (unsigned)((ms / TIMER_TICK_MS) % TIMER_SLOTS);
}

void timer_arm(struct timer_wheel *w, struct timer *t, uint64_t deadline_ms, timer_fn fire)
{
	timer_disarm(t);
	/* A deadline in the past fires at the next tick, never in this call:
	 * callers arm timers from inside callbacks. */
	if (deadline_ms <= w->now_ms)
		deadline_ms = w->now_ms + TIMER_TICK_MS;
	t->deadline_ms = deadline_ms;
	t->fire = fire;
	struct timer **head = &w->slot[slot_of(deadline_ms)];
	t->next = *head;
	if (*head)
		(*head)->pprev = &t->next;
	*head = t;
	t->pprev = head;
}

void timer_disarm(struct timer *t)
{
	if (!t->pprev)
		return;
	*t->pprev = t->next;
	if (t->next)
		t->next->pprev = t->pprev;
	t->next = NULL;
	t->pprev = NULL;
}

static void slot_expire(struct timer **head, uint64_t now_ms)
{
	struct timer *t = *head;
	while (t) {
		struct timer *next = t->next;
		if (t->deadline_ms <= now_ms) {
			timer_disarm(t);
			t->fire(t); /* may re-arm t, or free it */
		}
		t = next;
	}
}

void timer_wheel_advance(struct timer_wheel *w, uint64_t now_ms)
{
	if (now_ms <= w->now_ms)
		return;
	uint64_t from = w->now_ms / TIMER_TICK_MS, to = now_ms / TIMER_TICK_MS;
	/* After a long stall, one turn covers every slot. */
	if (to - from >= TIMER_SLOTS)
		from = to - TIMER_SLOTS + 1;
	w->now_ms = now_ms;
	for (uint64_t tick = from; tick <= to; tick++)
		slot_expire(&w->slot[tick % TIMER_SLOTS], now_ms);
}
