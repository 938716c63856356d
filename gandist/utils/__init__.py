"""Small helpers every layer may use; they import nothing of gandist's, so they can sit below everything."""
