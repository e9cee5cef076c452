"""Crystal graphs: formation energies of fcc alloys from graphs of atoms and neighbours (issue 21)."""
