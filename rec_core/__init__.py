"""rec_core: data tables, splits, models, training and evaluation for the LLM-enhanced recommendation job."""
