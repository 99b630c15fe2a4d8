-- The credential bound to `binding`, or an empty string.
return reply{credential = redis.call('GET', binding) or ''}
