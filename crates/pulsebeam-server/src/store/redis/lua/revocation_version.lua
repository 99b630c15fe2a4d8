-- The revocations' change counter.
return reply{version = num(redis.call('GET', KEY.version))}
