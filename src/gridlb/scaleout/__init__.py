"""Scale-out: active directors behind the router's ECMP, each announcing its VIPs over BGP."""
