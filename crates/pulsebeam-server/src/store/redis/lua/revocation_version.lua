-- The revocations' epoch and change counter, read at once: the epoch is set to `proposed` when
-- there is none (a new deployment, or Redis lost its data), so a counter that started again is
-- never taken for the one read before.
local held = redis.call('SET', epoch, proposed, 'NX', 'GET')
return reply{epoch = held or proposed, version = num(redis.call('GET', version))}
