-- Gives the lease KEY.lease up if ARG.holder holds it.
if redis.call('GET', KEY.lease) == ARG.holder then
  redis.call('DEL', KEY.lease)
  return reply{released = true}
end
return reply{released = false}
