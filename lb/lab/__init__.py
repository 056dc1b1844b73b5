"""The namespace lab (topology, test servers, the lab's lbd, ``lb demo``): see lb.lab.topology."""
