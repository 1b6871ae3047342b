"""Payment providers behind one contract (base.Provider); the registry names them."""
