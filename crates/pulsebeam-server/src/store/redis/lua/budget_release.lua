-- Gives back the units `member` holds in a project's two budgets: its connection was evicted,
-- or refused after the unit was taken.
redis.call('ZREM', polled, member)
redis.call('ZREM', mail, member)
return reply{}
