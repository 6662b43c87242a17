"""rfcn.evaluation"""
