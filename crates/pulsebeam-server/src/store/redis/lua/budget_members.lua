-- The live members of a project's `polled` budget: its connections that have polled.
return reply({}, redis.call('ZRANGEBYSCORE', polled, now_ms(), '+inf'))
