-- Gives `lease` up if `holder` holds it.
if redis.call('GET', lease) == holder then
  redis.call('DEL', lease)
  return reply{released = true}
end
return reply{released = false}
