-- The revocations' change counter, `version`.
return reply{version = num(redis.call('GET', version))}
