"""Network-namespace lab: the seed's topology (client, two directors, real servers) on one machine."""
